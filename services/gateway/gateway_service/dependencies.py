"""What routes state in their signatures: the caller, their role, the service clients.
Token and role checks live here and nowhere else in the gateway."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from facerestore_common.tokens import Principal, TokenVerifier
from gateway_service.clients import ServiceClients
from gateway_service.problems import Problem
from gateway_service.rate_limits import RateLimiter
from gateway_service.settings import Settings

_bearer = HTTPBearer(auto_error=False, description="An access token from /v1/auth/otp/verify or /v1/auth/refresh")


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_clients(request: Request) -> ServiceClients:
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


CurrentUser = Annotated[Principal, Depends(get_principal)]
AdminUser = Annotated[Principal, Depends(get_admin)]
Clients = Annotated[ServiceClients, Depends(get_clients)]
AppSettings = Annotated[Settings, Depends(get_settings)]


async def upload_quota(request: Request, principal: Annotated[Principal, Depends(get_principal)]) -> None:
    """Counts an upload against the caller's hourly quota (refused with 429 when spent)."""
    limiter: RateLimiter = request.app.state.rate_limiter
    verdict = await limiter.hit(request.app.state.upload_limit, principal.user_id)
    # The request context middleware puts these headers on the answer, whatever it is.
    request.state.rate_limit_verdict = verdict


UploadQuota = Annotated[None, Depends(upload_quota)]
