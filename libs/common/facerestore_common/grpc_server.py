"""gRPC server bootstrap: health service, and interceptors for request context,
tracing, logging, metrics, error mapping and access control, written once here.

The health status follows the service's dependencies: NOT_SERVING while one of them
(MongoDB, Redis, the broker) does not answer, SERVING again once it does, so that a
readiness probe takes the pod out of the balancing while it could not do its job."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import signal
import time
import uuid
from abc import abstractmethod
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind
from prometheus_client import Counter, Histogram

from facerestore_common.errors import (
    LIMIT_METADATA_KEY,
    LIMIT_POLICY_METADATA_KEY,
    REASON_METADATA_KEY,
    RETRY_AFTER_METADATA_KEY,
    DomainError,
    PermissionDenied,
    Unauthenticated,
)
from facerestore_common.grpc_client import KEEPALIVE_TIME_MS
from facerestore_common.health import DependencyCheck, DependencyWatch
from facerestore_common.logging import CLIENT_IP_METADATA_KEY, client_ip_var, get_logger, request_id_var
from facerestore_common.settings import GrpcServerSettings
from facerestore_common.startup_heap import frozen_startup_heap
from facerestore_common.telemetry import context_from_traceparent
from facerestore_common.tokens import TokenVerifier, bearer_token, current_principal

log = get_logger(__name__)
tracer = trace.get_tracer(__name__)

RPC_DURATION = Histogram("grpc_server_handling_seconds", "Time to handle a gRPC call", ["method"])
RPC_TOTAL = Counter("grpc_server_handled_total", "gRPC calls by result code", ["method", "code"])

# Clients ping every KEEPALIVE_TIME_MS; a server that wanted them rarer would answer with
# GOAWAY "too many pings" and drop the connection.
MIN_CLIENT_PING_INTERVAL_MS = KEEPALIVE_TIME_MS // 3
SERVER_KEEPALIVE_TIME_MS = 60_000
SERVER_KEEPALIVE_TIMEOUT_MS = 20_000


def server_options(
    max_message_bytes: int, max_connection_age_seconds: float, max_connection_age_grace_seconds: float
) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_connection_age_ms", int(max_connection_age_seconds * 1000)),
        ("grpc.max_connection_age_grace_ms", int(max_connection_age_grace_seconds * 1000)),
        ("grpc.keepalive_time_ms", SERVER_KEEPALIVE_TIME_MS),
        ("grpc.keepalive_timeout_ms", SERVER_KEEPALIVE_TIMEOUT_MS),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", MIN_CLIENT_PING_INTERVAL_MS),
    ]


class Access(enum.Enum):
    PUBLIC = "public"
    USER = "user"
    ADMIN = "admin"


def _metadata(context: grpc.aio.ServicerContext) -> dict[str, str]:
    return {key: value for key, value in (context.invocation_metadata() or ()) if isinstance(value, str)}


def _metadata_value(context: grpc.aio.ServicerContext, name: str) -> str | None:
    """The last text value of one metadata key (as _metadata would give it), without the dict."""
    found = None
    for key, value in context.invocation_metadata() or ():
        if key == name and isinstance(value, str):
            found = value
    return found


def _passed_on_metadata(error: grpc.aio.AioRpcError) -> tuple[tuple[str, str], ...]:
    keys = (REASON_METADATA_KEY, RETRY_AFTER_METADATA_KEY, LIMIT_METADATA_KEY, LIMIT_POLICY_METADATA_KEY)
    return tuple((key, str(value)) for key, value in (error.trailing_metadata() or ()) if key in keys)


Behaviour = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]


class HandlerWrapper(grpc.aio.ServerInterceptor):
    """Server-side work around each unary method, as a wrapper of the method's behaviour.

    GrpcServer applies it once per method, when the method is registered: grpc.aio runs any
    interceptor's coroutine and builds a new handler on every call, which cost about as much as
    the rest of the call's own handling. Passed to a grpc.aio server as an interceptor, it works
    as one too (its wrapped handlers kept per method). Health checks are left alone."""

    @abstractmethod
    def wrap(self, method: str, behaviour: Behaviour) -> Behaviour:
        """The method's behaviour with this wrapper's work around it."""

    def wrap_handler(self, method: str, handler: grpc.RpcMethodHandler | None) -> grpc.RpcMethodHandler | None:
        if handler is None or handler.unary_unary is None or method.startswith("/grpc.health"):
            return handler
        return grpc.unary_unary_rpc_method_handler(
            self.wrap(method, handler.unary_unary),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        wrapped: dict[str, tuple[Any, Any]] = self.__dict__.setdefault("_wrapped_handlers", {})
        known = wrapped.get(method)
        if known is None or known[0] is not handler:
            known = wrapped[method] = (handler, self.wrap_handler(method, handler))
        return known[1]


class RequestContextInterceptor(HandlerWrapper):
    """Request id, trace continuation, one log line per call, metrics, and the mapping
    of domain errors to status codes (with a stable reason in trailing metadata)."""

    def wrap(self, method: str, behaviour: Behaviour) -> Behaviour:
        duration = RPC_DURATION.labels(method)
        totals: dict[grpc.StatusCode, Any] = {}

        async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            metadata = _metadata(context)
            request_id_var.set(metadata.get("x-request-id") or uuid.uuid4().hex)
            client_ip_var.set(metadata.get(CLIENT_IP_METADATA_KEY, ""))
            token = otel_context.attach(context_from_traceparent(metadata.get("traceparent", "")))
            started = time.perf_counter()
            code = grpc.StatusCode.OK
            try:
                # What tracer.start_as_current_span does, without its two generator layers.
                with trace.use_span(tracer.start_span(method, kind=SpanKind.SERVER), end_on_exit=True):
                    try:
                        return await behaviour(request, context)
                    except DomainError as error:
                        code = error.status
                        context.set_trailing_metadata(error.trailing_metadata())
                        log.info("rpc_refused", method=method, code=code.name, reason=error.reason, detail=error.detail)
                        await context.abort(error.status, error.detail)
                    except grpc.aio.AioRpcError as error:
                        # A downstream service refused: pass its status and reason on.
                        code = error.code()
                        passed_on = _passed_on_metadata(error)
                        reason = dict(passed_on).get(REASON_METADATA_KEY)
                        if passed_on:
                            context.set_trailing_metadata(passed_on)
                        log.info("rpc_downstream_refused", method=method, code=code.name, reason=reason)
                        await context.abort(code, error.details() or "")
                    except asyncio.CancelledError:
                        code = grpc.StatusCode.CANCELLED
                        raise
                    except Exception as error:
                        if isinstance(error, grpc.aio.AbortError):
                            raise
                        code = grpc.StatusCode.INTERNAL
                        log.error("rpc_failed", method=method, exc_info=True)
                        await context.abort(grpc.StatusCode.INTERNAL, "internal error")
            finally:
                elapsed = time.perf_counter() - started
                duration.observe(elapsed)
                total = totals.get(code)
                if total is None:
                    total = totals[code] = RPC_TOTAL.labels(method, code.name)
                total.inc()
                log.info("rpc", method=method, code=code.name, duration_ms=round(elapsed * 1000, 1))
                otel_context.detach(token)

        return call


class AuthInterceptor(HandlerWrapper):
    """Verifies the bearer token and the role each method needs; methods not listed need a user."""

    def __init__(self, verifier: TokenVerifier, policy: Mapping[str, Access]) -> None:
        self._verifier = verifier
        self._policy = policy

    def wrap(self, method: str, behaviour: Behaviour) -> Behaviour:
        access = self._policy.get(method.rsplit("/", 1)[-1], Access.USER)
        verifier = self._verifier

        async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            current_principal.set(None)
            token = bearer_token(_metadata_value(context, "authorization"))
            if token is not None and access is not Access.PUBLIC:
                current_principal.set(await verifier.verify(token))
            if access is not Access.PUBLIC:
                principal = current_principal.get()
                if principal is None:
                    raise Unauthenticated("a bearer token is required")
                if access is Access.ADMIN and not principal.is_admin:
                    raise PermissionDenied("this needs the admin role")
            return await behaviour(request, context)

        return call


class _WrappedGenericHandler(grpc.GenericRpcHandler):
    def __init__(self, inner: grpc.GenericRpcHandler, wrap: Callable[[str, Any], Any]) -> None:
        self._inner = inner
        self._wrap = wrap
        self._wrapped: dict[str, tuple[Any, Any]] = {}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        handler = self._inner.service(handler_call_details)
        method = handler_call_details.method
        known = self._wrapped.get(method)
        if known is None or known[0] is not handler:
            known = self._wrapped[method] = (handler, self._wrap(method, handler))
        return known[1]


class WrappingServer(grpc.aio.Server):
    """A grpc.aio server whose methods are wrapped by `wrappers` (the first outermost) as they
    are registered; everything else is the server's own."""

    def __init__(self, server: grpc.aio.Server, wrappers: Sequence[HandlerWrapper]) -> None:
        self._server = server
        self._wrappers = list(reversed(wrappers))

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler | None) -> grpc.RpcMethodHandler | None:
        for wrapper in self._wrappers:
            handler = wrapper.wrap_handler(method, handler)
        return handler

    def add_generic_rpc_handlers(self, generic_rpc_handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self._server.add_generic_rpc_handlers(
            tuple(_WrappedGenericHandler(handler, self._wrap) for handler in generic_rpc_handlers)
        )

    def add_registered_method_handlers(
        self, service_name: str, method_handlers: dict[str, grpc.RpcMethodHandler]
    ) -> None:
        self._server.add_registered_method_handlers(
            service_name,
            {name: self._wrap(f"/{service_name}/{name}", handler) for name, handler in method_handlers.items()},
        )

    def add_insecure_port(self, address: str) -> int:
        return int(self._server.add_insecure_port(address))

    def add_secure_port(self, address: str, server_credentials: grpc.ServerCredentials) -> int:
        return int(self._server.add_secure_port(address, server_credentials))

    async def start(self) -> None:
        await self._server.start()

    async def stop(self, grace: float | None) -> None:
        await self._server.stop(grace)

    async def wait_for_termination(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109 - grpc.aio's signature
        return bool(await self._server.wait_for_termination(timeout))


class GrpcServer:
    """Owns the server's lifetime: health status, ports, graceful stop on SIGTERM/SIGINT.

    `checks` name the dependencies whose answer the health status follows; without any the
    status is SERVING from start to shutdown."""

    def __init__(
        self,
        service_names: list[str],
        host: str,
        port: int,
        max_message_bytes: int,
        interceptors: list[grpc.aio.ServerInterceptor],
        *,
        max_connection_age_seconds: float = 300.0,
        max_connection_age_grace_seconds: float = 30.0,
        checks: Mapping[str, DependencyCheck] | None = None,
        check_interval_seconds: float = 5.0,
        check_timeout_seconds: float = 2.0,
    ) -> None:
        chain = [RequestContextInterceptor(), *interceptors]
        options = server_options(max_message_bytes, max_connection_age_seconds, max_connection_age_grace_seconds)
        self.server: grpc.aio.Server
        if all(isinstance(interceptor, HandlerWrapper) for interceptor in chain):
            self.server = WrappingServer(grpc.aio.server(options=options), chain)  # type: ignore[arg-type]
        else:
            self.server = grpc.aio.server(interceptors=chain, options=options)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self._service_names = service_names
        self.address = f"{host}:{port}"
        self.server.add_insecure_port(self.address)
        self.dependencies = DependencyWatch(
            checks or {}, self._set_serving, check_interval_seconds, check_timeout_seconds
        )
        self._watch: asyncio.Task[None] | None = None

    @classmethod
    def from_settings(
        cls,
        settings: GrpcServerSettings,
        service_names: list[str],
        interceptors: list[grpc.aio.ServerInterceptor],
        checks: Mapping[str, DependencyCheck] | None = None,
    ) -> GrpcServer:
        return cls(
            service_names,
            settings.grpc_host,
            settings.grpc_port,
            settings.grpc_max_message_bytes,
            interceptors,
            max_connection_age_seconds=settings.grpc_max_connection_age_seconds,
            max_connection_age_grace_seconds=settings.grpc_max_connection_age_grace_seconds,
            checks=checks,
            check_interval_seconds=settings.dependency_check_interval_seconds,
            check_timeout_seconds=settings.dependency_check_timeout_seconds,
        )

    async def _set_serving(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ["", *self._service_names]:
            await self.health.set(name, status)

    async def start(self) -> None:
        """Start serving, with the health status the first round of checks gives, then keep it current."""
        await self.server.start()
        await self.dependencies.check_once()
        self._watch = asyncio.create_task(self.dependencies.run())
        log.info("grpc_serving", address=self.address, dependencies=self.dependencies.results)

    async def stop(self, grace_seconds: float = 10.0) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
            self._watch = None
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace_seconds)

    async def run(self, on_stop: Callable[[], Awaitable[None]] | None = None, grace_seconds: float = 10.0) -> None:
        await self.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        with frozen_startup_heap():
            await stop.wait()
        log.info("grpc_stopping")
        await self.stop(grace_seconds)
        if on_stop is not None:
            await on_stop()
        log.info("grpc_stopped")
