"""The FastAPI application: lifespan, request context, error handlers, routers."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from opentelemetry import trace
from redis.asyncio import Redis

from facerestore_common.grpc_client import remote_jwks_fetcher
from facerestore_common.logging import client_ip_var, get_logger, request_id_var
from facerestore_common.revocation import SessionRevocations
from facerestore_common.tokens import JwksCache, TokenVerifier
from gateway_service import problems
from gateway_service.body_limit import UploadBodyLimit
from gateway_service.client_ip import client_ip, parse_networks
from gateway_service.clients import ServiceClients
from gateway_service.problems import Problem
from gateway_service.rate_limits import Limit, RateLimiter
from gateway_service.routes import admin, auth, health, images
from gateway_service.settings import Settings

log = get_logger(__name__)
tracer = trace.get_tracer(__name__)

# Probes are not client traffic.
UNLIMITED_PATHS = frozenset({"/healthz", "/readyz"})


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        clients = ServiceClients.connect(settings)
        app.state.settings = settings
        app.state.clients = clients
        app.state.redis = Redis.from_url(settings.redis_url)
        app.state.verifier = TokenVerifier(
            JwksCache(remote_jwks_fetcher(clients.channels["auth"]), settings.jwks_cache_seconds),
            settings.jwt_issuer,
            settings.jwt_audience,
            settings.jwt_leeway_seconds,
            revocations=SessionRevocations(app.state.redis, settings.redis_key_prefix),
        )
        yield
        await clients.close()
        await app.state.redis.aclose()

    app = FastAPI(
        title="Face restoration API",
        version="1.0.0",
        description="Sign in with a code sent to your phone, upload a face photo, get it back restored.",
        lifespan=lifespan,
    )
    problems.install(app)
    trusted_proxies = parse_networks(settings.trusted_proxies)
    rate_limiter = RateLimiter(settings.redis_url, f"{settings.redis_key_prefix}:gateway-limits")
    ip_limit = Limit.of("requests-per-ip", settings.rate_limit_per_ip, fail_open=True)
    app.state.rate_limiter = rate_limiter
    app.state.upload_limit = Limit.of("uploads-per-user", settings.rate_limit_uploads_per_user, fail_open=False)
    # Added first, so it runs inside the request context (request id, client IP) set below.
    app.add_middleware(UploadBodyLimit, path="/v1/images", max_file_bytes=settings.max_upload_bytes)

    @app.middleware("http")
    async def request_context(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        incoming = request.headers.get("x-request-id", "")
        request_id = incoming if 0 < len(incoming) <= 128 and incoming.isprintable() else uuid.uuid4().hex
        request_id_var.set(request_id)
        peer = request.client.host if request.client else ""
        client_ip_var.set(client_ip(peer, request.headers.get("x-forwarded-for"), trusted_proxies))
        started = time.perf_counter()
        with tracer.start_as_current_span(f"{request.method} {request.url.path}"):
            response: Response
            try:
                verdict = (
                    await rate_limiter.hit(ip_limit, client_ip_var.get())
                    if request.url.path not in UNLIMITED_PATHS
                    else None
                )
            except Problem as refused:
                response = problems.problem_response(refused, request)
            else:
                response = await call_next(request)
                # A route's own, stricter limit (the upload quota) is the one the client sees.
                verdict = getattr(request.state, "rate_limit_verdict", None) or verdict
                for name, value in (verdict.headers() if verdict else {}).items():
                    response.headers.setdefault(name, value)
            log.info(
                "http_request",
                method=request.method,
                path=request.url.path,
                status=response.status_code,
                duration_ms=round((time.perf_counter() - started) * 1000, 1),
            )
        response.headers["X-Request-ID"] = request_id
        return response

    for router in (health.router, auth.router, images.router, admin.router):
        app.include_router(router)
    return app
