"""The FastAPI application: lifespan, request context, error handlers, routers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI
from redis.asyncio import Redis

from facerestore_common.grpc_client import remote_jwks_fetcher
from facerestore_common.model_registry import ModelRegistry
from facerestore_common.startup_heap import frozen_startup_heap
from facerestore_common.tokens import JwksCache, TokenVerifier
from gateway_service import docs, openapi_document, problems, webapp
from gateway_service.body_limit import BodyLimit
from gateway_service.client_ip import parse_networks
from gateway_service.clients import ServiceClients
from gateway_service.http_metrics import HttpMetrics, RouteTemplates
from gateway_service.model_catalog import ModelCatalog
from gateway_service.page_cache import PageCache
from gateway_service.rate_limits import Limit, RateLimiter
from gateway_service.refusals import RefusalReporter
from gateway_service.request_context import RequestContext
from gateway_service.routes import (
    account,
    admin,
    auth,
    exports,
    health,
    images,
    insights,
    library,
    moderation,
    restorations,
    search,
)
from gateway_service.sessions import PrefetchedRevocations
from gateway_service.settings import Settings

# In the order their routes are matched.
ROUTE_MODULES = (health, auth, account, library, images, restorations, exports, search, admin, insights, moderation)


def add_routes(app: FastAPI, router: APIRouter) -> None:
    """The router's routes, as the app's own. FastAPI's include_router puts a layer around each
    router that every request walks through until its route matches (~12 µs a request measured
    in-process for the first router, more for each before the one that matches); these routers
    set nothing that include_router would add (no prefix, dependencies or responses of their
    own), and the OpenAPI document is the same either way (services/gateway/tests/test_openapi_document.py)."""
    app.router.routes.extend(router.routes)


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        clients = ServiceClients.connect(settings)
        app.state.settings = settings
        app.state.clients = clients
        app.state.redis = redis
        app.state.readiness = health.Readiness(app.state.redis, clients, settings.readyz_cache_seconds)
        app.state.verifier = TokenVerifier(
            JwksCache(remote_jwks_fetcher(clients.channels["auth"]), settings.jwks_cache_seconds),
            settings.jwt_issuer,
            settings.jwt_audience,
            settings.jwt_leeway_seconds,
            revocations=sessions,
        )
        app.state.refusals = RefusalReporter.start(settings)
        with frozen_startup_heap():
            yield
        await app.state.refusals.stop()
        await clients.close()
        await rate_limiter.aclose()
        await redis.aclose()

    app = FastAPI(
        title="Face restoration API",
        version="1.0.0",
        description="Sign in with a code sent to your phone, upload a face photo, get it back restored.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        # RequestContext makes each request's span (none for probes); metrics are Prometheus's.
        telemetry={"tracing": False, "metrics": False, "logs": False},
        generate_unique_id_function=openapi_document.operation_id,
    )
    problems.install(app)
    trusted_proxies = parse_networks(settings.trusted_proxies)
    rate_limiter = RateLimiter(settings.redis_url, f"{settings.redis_key_prefix}:gateway-limits")
    ip_limit = Limit.of("requests-per-ip", settings.rate_limit_per_ip, fail_open=True)
    app.state.rate_limiter = rate_limiter
    app.state.upload_limit = Limit.of("uploads-per-user", settings.rate_limit_uploads_per_user, fail_open=False)
    app.state.search_limit = Limit.of("searches-per-user", settings.rate_limit_searches_per_user, fail_open=False)
    app.state.export_limit = Limit.of("exports-per-user", settings.rate_limit_exports_per_user, fail_open=False)
    # A Redis that hangs must not hold requests: every call has a deadline.
    redis = Redis.from_url(settings.redis_url, socket_timeout=1.0, socket_connect_timeout=1.0)
    # The restorer models that live workers announce (the same prefix as the workers').
    app.state.models = ModelRegistry(redis, settings.redis_key_prefix)
    app.state.model_catalog = ModelCatalog(
        app.state.models, settings.models_refresh_seconds, settings.models_grace_seconds
    )
    sessions = PrefetchedRevocations(redis, settings.redis_key_prefix)
    app.state.page_cache = page_cache = PageCache(settings.page_cache_bytes, settings.page_cache_max_age_seconds)
    # Added first, so it runs inside the request context (request id, client IP) added next.
    app.add_middleware(
        BodyLimit,
        max_body_bytes=settings.max_body_bytes,
        upload_paths={"/v1/images": settings.max_upload_bytes, "/v1/search": settings.max_upload_bytes},
        read_timeout_seconds=settings.body_read_timeout_seconds,
    )
    app.add_middleware(
        RequestContext,
        limiter=rate_limiter,
        ip_limit=ip_limit,
        trusted_proxies=trusted_proxies,
        sessions=sessions,
        https=settings.served_over_https,
        pages=page_cache,
        key_prefix=settings.redis_key_prefix,
    )

    # Added last, so it is outermost: it sees every response, those refused above included.
    app.add_middleware(HttpMetrics, templates=RouteTemplates(app))

    for module in ROUTE_MODULES:
        add_routes(app, module.router)
    search.document_request_bodies(app)
    openapi_document.install(app)
    docs.install(app)
    webapp.install(app, settings.webapp_dir)
    return app
