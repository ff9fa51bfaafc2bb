"""Sign-in: codes by SMS (and by email, once a user has confirmed an address), tokens,
sessions, and the public keys that verify tokens."""

from __future__ import annotations

import json

from fastapi import Response, status
from fastapi.responses import JSONResponse

from facerestore.auth.v1 import auth_pb2
from facerestore_common.grpc_client import call_metadata
from gateway_service.convert import tokens_out, user_out
from gateway_service.dependencies import AppSettings, Clients, CurrentUser
from gateway_service.openapi_document import api_router
from gateway_service.responses import INVALID, UNAUTHORIZED, UNAVAILABLE, problem, rate_limited
from gateway_service.schemas import (
    CodeSent,
    EmailRequest,
    EmailVerify,
    OtpRequest,
    OtpSent,
    OtpVerify,
    RefreshRequest,
    TokenResponse,
    UserOut,
)

router = api_router("auth")

_WRONG_CODE = problem("The code is wrong, used, expired, or has had too many wrong tries")
_CODE_LIMITS = rate_limited(
    "A code was sent less than a minute ago, or the hourly limit per number/address or per client IP is reached"
)
_VERIFY_LIMITS = rate_limited("Too many verification attempts for this number/address in the last hour")


@router.post(
    "/v1/auth/otp",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=OtpSent,
    summary="Send a one-time code by SMS",
    description="The answer is the same whether or not the number has an account.",
    responses={
        422: problem("Not a valid mobile number, or a country codes are not sent to"),
        429: _CODE_LIMITS,
        503: problem("The SMS could not be sent (no valid code is left behind), or limits cannot be checked"),
    },
)
async def request_code(body: OtpRequest, clients: Clients, settings: AppSettings) -> OtpSent:
    response = await clients.auth.RequestCode(
        auth_pb2.RequestCodeRequest(phone=body.phone), timeout=settings.grpc_deadline_seconds, metadata=call_metadata()
    )
    return OtpSent(phone=response.phone, expires_in=response.expires_in)


@router.post(
    "/v1/auth/otp/verify",
    response_model=TokenResponse,
    summary="Exchange an SMS code for tokens (creates the account on first sign-in)",
    responses={401: _WRONG_CODE, 422: INVALID, 429: _VERIFY_LIMITS, 503: UNAVAILABLE},
)
async def verify_code(body: OtpVerify, clients: Clients, settings: AppSettings) -> TokenResponse:
    response = await clients.auth.VerifyCode(
        auth_pb2.VerifyCodeRequest(phone=body.phone, code=body.code),
        timeout=settings.grpc_deadline_seconds,
        metadata=call_metadata(),
    )
    return tokens_out(response.tokens)


@router.post(
    "/v1/auth/email/otp",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=CodeSent,
    summary="Send a one-time code to a confirmed email address (fallback sign-in)",
    description="The answer is the same whether or not the address belongs to an account.",
    responses={422: problem("Not a valid email address"), 429: _CODE_LIMITS, 503: UNAVAILABLE},
)
async def request_email_code(body: EmailRequest, clients: Clients, settings: AppSettings) -> CodeSent:
    response = await clients.auth.RequestEmailCode(
        auth_pb2.RequestEmailCodeRequest(email=body.email),
        timeout=settings.grpc_deadline_seconds,
        metadata=call_metadata(),
    )
    return CodeSent(expires_in=response.expires_in)


@router.post(
    "/v1/auth/email/otp/verify",
    response_model=TokenResponse,
    summary="Exchange an email code for tokens",
    responses={401: _WRONG_CODE, 422: INVALID, 429: _VERIFY_LIMITS, 503: UNAVAILABLE},
)
async def verify_email_code(body: EmailVerify, clients: Clients, settings: AppSettings) -> TokenResponse:
    response = await clients.auth.VerifyEmailCode(
        auth_pb2.VerifyEmailCodeRequest(email=body.email, code=body.code),
        timeout=settings.grpc_deadline_seconds,
        metadata=call_metadata(),
    )
    return tokens_out(response.tokens)


@router.post(
    "/v1/auth/refresh",
    response_model=TokenResponse,
    summary="Exchange a refresh token for a new pair (the old one stops working)",
    description="Presenting a refresh token that was already exchanged ends its whole session.",
    responses={
        401: problem("Unknown, expired, revoked or already used refresh token"),
        403: problem("The account is suspended"),
        422: INVALID,
    },
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
    summary="End this session: its refresh and access tokens stop working at once",
    responses={401: UNAUTHORIZED},
)
async def logout(user: CurrentUser, clients: Clients, settings: AppSettings) -> Response:
    await clients.auth.Logout(
        auth_pb2.LogoutRequest(), timeout=settings.grpc_deadline_seconds, metadata=call_metadata(user.token)
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/v1/me", response_model=UserOut, summary="The signed-in user", responses={401: UNAUTHORIZED})
async def me(user: CurrentUser, clients: Clients, settings: AppSettings) -> UserOut:
    response = await clients.auth.GetMe(
        auth_pb2.GetMeRequest(), timeout=settings.grpc_deadline_seconds, metadata=call_metadata(user.token)
    )
    return user_out(response.user)


@router.post(
    "/v1/me/email",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=CodeSent,
    summary="Add an email address: a code to confirm it is sent there",
    responses={401: UNAUTHORIZED, 422: problem("Not a valid email address"), 429: _CODE_LIMITS, 503: UNAVAILABLE},
)
async def add_email(body: EmailRequest, user: CurrentUser, clients: Clients, settings: AppSettings) -> CodeSent:
    response = await clients.auth.AddEmail(
        auth_pb2.AddEmailRequest(email=body.email),
        timeout=settings.grpc_deadline_seconds,
        metadata=call_metadata(user.token),
    )
    return CodeSent(expires_in=response.expires_in)


@router.post(
    "/v1/me/email/verify",
    response_model=UserOut,
    summary="Confirm the email address with the code sent to it",
    responses={
        401: _WRONG_CODE,
        409: problem("The address belongs to another account"),
        422: INVALID,
        429: _VERIFY_LIMITS,
    },
)
async def confirm_email(body: EmailVerify, user: CurrentUser, clients: Clients, settings: AppSettings) -> UserOut:
    response = await clients.auth.ConfirmEmail(
        auth_pb2.ConfirmEmailRequest(email=body.email, code=body.code),
        timeout=settings.grpc_deadline_seconds,
        metadata=call_metadata(user.token),
    )
    return user_out(response.user)


@router.get("/.well-known/jwks.json", summary="Public keys that verify access tokens (RFC 7517)")
async def jwks(clients: Clients, settings: AppSettings) -> JSONResponse:
    response = await clients.auth.GetJwks(
        auth_pb2.GetJwksRequest(), timeout=settings.grpc_deadline_seconds, metadata=call_metadata()
    )
    return JSONResponse(json.loads(response.jwks_json), headers={"Cache-Control": "public, max-age=300"})
