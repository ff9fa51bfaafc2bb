"""What every outgoing gRPC call records: a client span (whose context the callee continues)
and client-side metrics, by method and status code. Health checks are left out: probes make
them every few seconds and they would drown the rest."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import grpc
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from prometheus_client import Counter, Histogram

from facerestore_common.telemetry import current_traceparent

tracer = trace.get_tracer(__name__)

CLIENT_DURATION = Histogram("grpc_client_handling_seconds", "Time until a gRPC call's answer", ["method"])
CLIENT_TOTAL = Counter("grpc_client_handled_total", "gRPC calls made, by result code", ["method", "code"])


def _method_name(method: bytes | str) -> str:
    return method.decode() if isinstance(method, bytes) else method


def _with_traceparent(details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
    """The call's metadata with the current (client span's) trace context in place of the caller's."""
    metadata = grpc.aio.Metadata(*[(key, value) for key, value in (details.metadata or ()) if key != "traceparent"])
    traceparent = current_traceparent()
    if traceparent:
        metadata.add("traceparent", traceparent)
    return grpc.aio.ClientCallDetails(
        details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
    )


class ClientTelemetryInterceptor(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    async def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Any],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        method = _method_name(client_call_details.method)
        if method.startswith("/grpc.health"):
            return await continuation(client_call_details, request)
        started = time.perf_counter()
        code = grpc.StatusCode.UNKNOWN
        try:
            with tracer.start_as_current_span(method, kind=SpanKind.CLIENT) as span:
                span.set_attribute("rpc.system", "grpc")
                call = await continuation(_with_traceparent(client_call_details), request)
                code = await call.code()
                span.set_attribute("rpc.grpc.status_code", code.value[0])
                if code is not grpc.StatusCode.OK:
                    span.set_status(Status(StatusCode.ERROR, code.name))
                return call
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        finally:
            CLIENT_DURATION.labels(method).observe(time.perf_counter() - started)
            CLIENT_TOTAL.labels(method, code.name).inc()
