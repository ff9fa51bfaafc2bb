"""gRPC server bootstrap: health service, and interceptors for request context,
tracing, logging, metrics, error mapping and access control, written once here."""

from __future__ import annotations

import asyncio
import enum
import signal
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from opentelemetry import context as otel_context
from opentelemetry import trace
from prometheus_client import Counter, Histogram

from facerestore_common.errors import (
    LIMIT_METADATA_KEY,
    REASON_METADATA_KEY,
    RETRY_AFTER_METADATA_KEY,
    DomainError,
    PermissionDenied,
    Unauthenticated,
)
from facerestore_common.logging import CLIENT_IP_METADATA_KEY, client_ip_var, get_logger, request_id_var
from facerestore_common.telemetry import context_from_traceparent
from facerestore_common.tokens import TokenVerifier, bearer_token, current_principal

log = get_logger(__name__)
tracer = trace.get_tracer(__name__)

RPC_DURATION = Histogram("grpc_server_handling_seconds", "Time to handle a gRPC call", ["method"])
RPC_TOTAL = Counter("grpc_server_handled_total", "gRPC calls by result code", ["method", "code"])


class Access(enum.Enum):
    PUBLIC = "public"
    USER = "user"
    ADMIN = "admin"


def _metadata(context: grpc.aio.ServicerContext) -> dict[str, str]:
    return {key: value for key, value in (context.invocation_metadata() or ()) if isinstance(value, str)}


def _passed_on_metadata(error: grpc.aio.AioRpcError) -> tuple[tuple[str, str], ...]:
    keys = (REASON_METADATA_KEY, RETRY_AFTER_METADATA_KEY, LIMIT_METADATA_KEY)
    return tuple((key, str(value)) for key, value in (error.trailing_metadata() or ()) if key in keys)


def _wrap_unary(handler: grpc.RpcMethodHandler, wrapper: Callable[..., Any]) -> grpc.RpcMethodHandler:
    if handler is None or handler.unary_unary is None:
        return handler
    return grpc.unary_unary_rpc_method_handler(
        wrapper(handler.unary_unary),
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


class RequestContextInterceptor(grpc.aio.ServerInterceptor):
    """Request id, trace continuation, one log line per call, metrics, and the mapping
    of domain errors to status codes (with a stable reason in trailing metadata)."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if method.startswith("/grpc.health"):
            return handler

        def wrapper(inner: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
            async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
                metadata = _metadata(context)
                request_id_var.set(metadata.get("x-request-id") or uuid.uuid4().hex)
                client_ip_var.set(metadata.get(CLIENT_IP_METADATA_KEY, ""))
                token = otel_context.attach(context_from_traceparent(metadata.get("traceparent", "")))
                started = time.perf_counter()
                code = grpc.StatusCode.OK
                try:
                    with tracer.start_as_current_span(method):
                        try:
                            return await inner(request, context)
                        except DomainError as error:
                            code = error.status
                            context.set_trailing_metadata(error.trailing_metadata())
                            log.info(
                                "rpc_refused", method=method, code=code.name, reason=error.reason, detail=error.detail
                            )
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
                    RPC_DURATION.labels(method).observe(elapsed)
                    RPC_TOTAL.labels(method, code.name).inc()
                    log.info("rpc", method=method, code=code.name, duration_ms=round(elapsed * 1000, 1))
                    otel_context.detach(token)

            return call

        return _wrap_unary(handler, wrapper)


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Verifies the bearer token and the role each method needs; methods not listed need a user."""

    def __init__(self, verifier: TokenVerifier, policy: Mapping[str, Access]) -> None:
        self._verifier = verifier
        self._policy = policy

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if method.startswith("/grpc.health"):
            return handler
        access = self._policy.get(method.rsplit("/", 1)[-1], Access.USER)
        verifier = self._verifier

        def wrapper(inner: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
            async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
                current_principal.set(None)
                token = bearer_token(_metadata(context).get("authorization"))
                if token is not None and access is not Access.PUBLIC:
                    current_principal.set(await verifier.verify(token))
                if access is not Access.PUBLIC:
                    principal = current_principal.get()
                    if principal is None:
                        raise Unauthenticated("a bearer token is required")
                    if access is Access.ADMIN and not principal.is_admin:
                        raise PermissionDenied("this needs the admin role")
                return await inner(request, context)

            return call

        return _wrap_unary(handler, wrapper)


class GrpcServer:
    """Owns the server's lifetime: health status, ports, graceful stop on SIGTERM/SIGINT."""

    def __init__(
        self,
        service_names: list[str],
        host: str,
        port: int,
        max_message_bytes: int,
        interceptors: list[grpc.aio.ServerInterceptor],
    ) -> None:
        self.server = grpc.aio.server(
            interceptors=[RequestContextInterceptor(), *interceptors],
            options=[
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.max_send_message_length", max_message_bytes),
            ],
        )
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self._service_names = service_names
        self.address = f"{host}:{port}"
        self.server.add_insecure_port(self.address)

    async def run(self, on_stop: Callable[[], Awaitable[None]] | None = None, grace_seconds: float = 10.0) -> None:
        await self.server.start()
        for name in ["", *self._service_names]:
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("grpc_serving", address=self.address)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("grpc_stopping")
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace_seconds)
        if on_stop is not None:
            await on_stop()
        log.info("grpc_stopped")
