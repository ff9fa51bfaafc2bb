"""Sign-in: request a code, verify it, refresh, log out, who am I, the public keys."""

from __future__ import annotations

import json

from fastapi import APIRouter, Response, status
from fastapi.responses import JSONResponse

from facerestore.auth.v1 import auth_pb2
from facerestore_common.grpc_client import call_metadata
from gateway_service.convert import tokens_out, user_out
from gateway_service.dependencies import AppSettings, Clients, CurrentUser
from gateway_service.schemas import (
    OtpRequest,
    OtpSent,
    OtpVerify,
    ProblemDetails,
    RefreshRequest,
    TokenResponse,
    UserOut,
)

router = APIRouter()
_problem = {"model": ProblemDetails, "content": {"application/problem+json": {}}}


@router.post(
    "/v1/auth/otp",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=OtpSent,
    tags=["auth"],
    summary="Send a one-time code by SMS",
    responses={422: {**_problem, "description": "Not a valid mobile number"}, 503: _problem},
)
async def request_code(body: OtpRequest, clients: Clients, settings: AppSettings) -> OtpSent:
    response = await clients.auth.RequestCode(
        auth_pb2.RequestCodeRequest(phone=body.phone), timeout=settings.grpc_deadline_seconds, metadata=call_metadata()
    )
    return OtpSent(phone=response.phone, expires_in=response.expires_in)


@router.post(
    "/v1/auth/otp/verify",
    response_model=TokenResponse,
    tags=["auth"],
    summary="Exchange a code for tokens",
    responses={401: {**_problem, "description": "Wrong, used or expired code"}, 422: _problem},
)
async def verify_code(body: OtpVerify, clients: Clients, settings: AppSettings) -> TokenResponse:
    response = await clients.auth.VerifyCode(
        auth_pb2.VerifyCodeRequest(phone=body.phone, code=body.code),
        timeout=settings.grpc_deadline_seconds,
        metadata=call_metadata(),
    )
    return tokens_out(response.tokens)


@router.post(
    "/v1/auth/refresh",
    response_model=TokenResponse,
    tags=["auth"],
    summary="Exchange a refresh token for a new pair (the old one stops working)",
    responses={401: _problem, 422: _problem},
)
async def refresh(body: RefreshRequest, clients: Clients, settings: AppSettings) -> TokenResponse:
    response = await clients.auth.RefreshToken(
        auth_pb2.RefreshTokenRequest(refresh_token=body.refresh_token),
        timeout=settings.grpc_deadline_seconds,
        metadata=call_metadata(),
    )
    return tokens_out(response.tokens)


@router.post(
    "/v1/auth/logout",
    status_code=status.HTTP_204_NO_CONTENT,
    tags=["auth"],
    summary="End this session (its refresh tokens stop working)",
    responses={401: _problem},
)
async def logout(user: CurrentUser, clients: Clients, settings: AppSettings) -> Response:
    await clients.auth.Logout(
        auth_pb2.LogoutRequest(), timeout=settings.grpc_deadline_seconds, metadata=call_metadata(user.token)
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/v1/me", response_model=UserOut, tags=["auth"], summary="The signed-in user", responses={401: _problem})
async def me(user: CurrentUser, clients: Clients, settings: AppSettings) -> UserOut:
    response = await clients.auth.GetMe(
        auth_pb2.GetMeRequest(), timeout=settings.grpc_deadline_seconds, metadata=call_metadata(user.token)
    )
    return user_out(response.user)


@router.get("/.well-known/jwks.json", tags=["auth"], summary="Public keys that verify access tokens")
async def jwks(clients: Clients, settings: AppSettings) -> JSONResponse:
    response = await clients.auth.GetJwks(
        auth_pb2.GetJwksRequest(), timeout=settings.grpc_deadline_seconds, metadata=call_metadata()
    )
    return JSONResponse(json.loads(response.jwks_json), headers={"Cache-Control": "public, max-age=300"})
