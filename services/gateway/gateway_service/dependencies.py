"""What routes state in their signatures: the caller, their role, the service clients.
Token and role checks live here and nowhere else in the gateway."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated

import grpc
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from facerestore_common.tokens import Principal, TokenVerifier
from gateway_service.clients import ServiceClients
from gateway_service.model_catalog import ModelCatalog
from gateway_service.problems import Problem
from gateway_service.rate_limits import RateLimiter, Verdict
from gateway_service.settings import Settings

_bearer = HTTPBearer(auto_error=False, description="An access token from /v1/auth/otp/verify or /v1/auth/refresh")


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_clients(request: Request) -> ServiceClients:
    clients: ServiceClients = request.app.state.clients
    return clients


async def get_principal(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Problem(401, "unauthenticated", "a bearer token is required")
    verifier: TokenVerifier = request.app.state.verifier
    return await verifier.verify(credentials.credentials)


async def get_admin(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
    if not principal.is_admin:
        raise Problem(403, "forbidden", "this needs the admin role")
    return principal


async def get_models(request: Request) -> ModelCatalog:
    models: ModelCatalog = request.app.state.model_catalog
    return models


CurrentUser = Annotated[Principal, Depends(get_principal)]
AdminUser = Annotated[Principal, Depends(get_admin)]
Clients = Annotated[ServiceClients, Depends(get_clients)]
AppSettings = Annotated[Settings, Depends(get_settings)]
# Which restorer models live workers offer (the registry in Redis, read through a short cache).
Models = Annotated[ModelCatalog, Depends(get_models)]


class UploadSpend:
    """An upload counted against the caller's quota, taken back unless it turns out to be a
    newly accepted upload: a refused one (any error but a passed deadline) or an Idempotency-Key
    replay spends nothing."""

    def __init__(self, limiter: RateLimiter, verdict: Verdict | None, request: Request) -> None:
        self._limiter = limiter
        self._verdict = verdict
        self._request = request

    async def take_back(self) -> None:
        if self._verdict is None:
            return
        verdict, self._verdict = self._verdict, None
        self._request.state.rate_limit_verdict = await self._limiter.take_back(verdict)


async def upload_quota(
    request: Request, principal: Annotated[Principal, Depends(get_principal)]
) -> AsyncIterator[UploadSpend]:
    """Counts an upload against the caller's hourly quota (refused with 429 when spent)."""
    limiter: RateLimiter = request.app.state.rate_limiter
    verdict = await limiter.hit(request.app.state.upload_limit, principal.user_id)
    # The request context middleware puts these headers on the answer, whatever it is.
    request.state.rate_limit_verdict = verdict
    spend = UploadSpend(limiter, verdict, request)
    try:
        yield spend
    except BaseException as error:
        if not _may_still_be_accepted(error):
            await spend.take_back()
        raise


def _may_still_be_accepted(error: BaseException) -> bool:
    """A deadline that passed or a client that hung up: the upload service finishes such an
    upload all the same (it never stops one for its caller), so it stays counted."""
    if isinstance(error, asyncio.CancelledError):
        return True
    return isinstance(error, grpc.aio.AioRpcError) and error.code() in (
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.CANCELLED,
    )


# Function scope: the route's outcome (an exception included) reaches it before the answer is sent.
UploadQuota = Annotated[UploadSpend, Depends(upload_quota, scope="function")]


async def search_quota(request: Request, principal: Annotated[Principal, Depends(get_principal)]) -> None:
    """Counts a search against the caller's per-minute search limit (refused with 429 when spent)."""
    limiter: RateLimiter = request.app.state.rate_limiter
    request.state.rate_limit_verdict = await limiter.hit(request.app.state.search_limit, principal.user_id)


SearchQuota = Annotated[None, Depends(search_quota)]


async def export_quota(
    request: Request, principal: Annotated[Principal, Depends(get_principal)]
) -> AsyncIterator[UploadSpend]:
    """Counts an export against the caller's daily limit (refused with 429 when spent); a request
    that fails spends nothing."""
    limiter: RateLimiter = request.app.state.rate_limiter
    verdict = await limiter.hit(request.app.state.export_limit, principal.user_id)
    request.state.rate_limit_verdict = verdict
    spend = UploadSpend(limiter, verdict, request)
    try:
        yield spend
    except BaseException:
        await spend.take_back()
        raise


ExportQuota = Annotated[UploadSpend, Depends(export_quota, scope="function")]
