"""What every outgoing unary gRPC call records: a client span (whose context the callee continues)
and client-side metrics, by method and status code. Health checks are left out: probes make
them every few seconds and they would drown the rest.

It wraps the channel's unary methods rather than being a grpc.aio client interceptor: with any
interceptor, grpc.aio runs each call through an intercepted call (another task and several layers
of Python around the real call), which cost more CPU than the telemetry itself."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

import grpc
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from prometheus_client import Counter, Histogram

from facerestore_common.telemetry import traceparent_of

tracer = trace.get_tracer(__name__)

CLIENT_DURATION = Histogram("grpc_client_handling_seconds", "Time until a gRPC call's answer", ["method"])
CLIENT_TOTAL = Counter("grpc_client_handled_total", "gRPC calls made, by result code", ["method", "code"])

Metadata = Sequence[tuple[str, str | bytes]]


def _with_traceparent(metadata: Metadata | None, traceparent: str) -> Metadata | None:
    """The call's metadata with the client span's trace context in place of the caller's."""
    if not traceparent:
        return metadata
    return (*(item for item in metadata or () if item[0] != "traceparent"), ("traceparent", traceparent))


class TracedUnaryUnary(grpc.aio.UnaryUnaryMultiCallable):  # type: ignore[misc]
    """A unary method whose calls are client spans and are counted; awaiting a call gives its
    answer or raises its AioRpcError, as the plain method's call does."""

    def __init__(self, inner: grpc.aio.UnaryUnaryMultiCallable, method: str) -> None:
        self._inner = inner
        self._method = method
        # The labelled series, looked up once (labels() costs more than the observation).
        self._duration = CLIENT_DURATION.labels(method)
        self._totals: dict[grpc.StatusCode, Any] = {}

    def _count(self, code: grpc.StatusCode, seconds: float) -> None:
        total = self._totals.get(code)
        if total is None:
            total = self._totals[code] = CLIENT_TOTAL.labels(self._method, code.name)
        total.inc()
        self._duration.observe(seconds)

    async def __call__(  # type: ignore[override]
        self,
        request: Any,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - grpc.aio's own signature
        metadata: Metadata | None = None,
        credentials: grpc.CallCredentials | None = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
    ) -> Any:
        started = time.perf_counter()
        code = grpc.StatusCode.UNKNOWN
        span = tracer.start_span(self._method, kind=SpanKind.CLIENT, attributes={"rpc.system": "grpc"})
        try:
            response = await self._inner(
                request,
                timeout=timeout,
                metadata=_with_traceparent(metadata, traceparent_of(span)),
                credentials=credentials,
                wait_for_ready=wait_for_ready,
                compression=compression,
            )
            code = grpc.StatusCode.OK
            return response
        except grpc.aio.AioRpcError as error:
            code = error.code()
            span.set_status(Status(StatusCode.ERROR, code.name))
            raise
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        except Exception as error:
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, type(error).__name__))
            raise
        finally:
            span.set_attribute("rpc.grpc.status_code", code.value[0])
            span.end()
            self._count(code, time.perf_counter() - started)


class TelemetryChannel(grpc.aio.Channel):  # type: ignore[misc]
    """A channel whose unary-unary methods (but health checks) record spans and metrics; the
    rest is the wrapped channel's."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._channel = channel

    async def __aenter__(self) -> TelemetryChannel:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._channel.close(None)

    async def close(self, grace: float | None = None) -> None:
        await self._channel.close(grace)

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        return self._channel.get_state(try_to_connect)

    async def wait_for_state_change(self, last_observed_state: grpc.ChannelConnectivity) -> None:
        await self._channel.wait_for_state_change(last_observed_state)

    async def channel_ready(self) -> None:
        await self._channel.channel_ready()

    def unary_unary(
        self,
        method: str,
        request_serializer: Callable[[Any], bytes] | None = None,
        response_deserializer: Callable[[bytes], Any] | None = None,
        _registered_method: bool | None = False,
    ) -> grpc.aio.UnaryUnaryMultiCallable:
        inner = self._channel.unary_unary(method, request_serializer, response_deserializer, _registered_method)
        if method.startswith("/grpc.health"):
            return inner
        return TracedUnaryUnary(inner, method)

    def unary_stream(
        self,
        method: str,
        request_serializer: Callable[[Any], bytes] | None = None,
        response_deserializer: Callable[[bytes], Any] | None = None,
        _registered_method: bool | None = False,
    ) -> grpc.aio.UnaryStreamMultiCallable:
        return self._channel.unary_stream(method, request_serializer, response_deserializer, _registered_method)

    def stream_unary(
        self,
        method: str,
        request_serializer: Callable[[Any], bytes] | None = None,
        response_deserializer: Callable[[bytes], Any] | None = None,
        _registered_method: bool | None = False,
    ) -> grpc.aio.StreamUnaryMultiCallable:
        return self._channel.stream_unary(method, request_serializer, response_deserializer, _registered_method)

    def stream_stream(
        self,
        method: str,
        request_serializer: Callable[[Any], bytes] | None = None,
        response_deserializer: Callable[[bytes], Any] | None = None,
        _registered_method: bool | None = False,
    ) -> grpc.aio.StreamStreamMultiCallable:
        return self._channel.stream_stream(method, request_serializer, response_deserializer, _registered_method)
