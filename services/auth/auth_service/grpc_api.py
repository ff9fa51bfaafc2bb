"""gRPC transport for the auth service: maps messages to the sign-in flow and back."""

from __future__ import annotations

import grpc

from auth_service.email_signin import EmailSignIn
from auth_service.erasure import AccountErasure
from auth_service.keys import KeyRing
from auth_service.signin import SignIn, Tokens
from auth_service.users import User, UserRepository
from facerestore.auth.v1 import auth_pb2, auth_pb2_grpc
from facerestore_common.errors import InvalidArgument, NotFound, Unavailable
from facerestore_common.grpc_server import Access
from facerestore_common.timeutil import ms_to_timestamp
from facerestore_common.tokens import require_principal

ACCESS_POLICY = {
    "RequestCode": Access.PUBLIC,
    "VerifyCode": Access.PUBLIC,
    "RefreshToken": Access.PUBLIC,
    "GetJwks": Access.PUBLIC,
    "Logout": Access.USER,
    "GetMe": Access.USER,
    "ListUsers": Access.ADMIN,
    "CountUsers": Access.ADMIN,
    "AddEmail": Access.USER,
    "ConfirmEmail": Access.USER,
    "RequestEmailCode": Access.PUBLIC,
    "VerifyEmailCode": Access.PUBLIC,
    "SetUserBanned": Access.ADMIN,
    "GetUser": Access.ADMIN,
    "DeleteAccount": Access.USER,
}


def user_message(user: User) -> auth_pb2.User:
    return auth_pb2.User(
        id=user.id,
        phone=user.phone,
        role=user.role,
        created_at=ms_to_timestamp(user.created_at_ms),
        last_login_at=ms_to_timestamp(user.last_login_at_ms),
        email=user.email,
        email_verified=bool(user.email),
        banned=user.banned,
    )


def token_message(tokens: Tokens) -> auth_pb2.TokenPair:
    return auth_pb2.TokenPair(
        access_token=tokens.access_token, refresh_token=tokens.refresh_token, expires_in=tokens.expires_in
    )


class AuthApi(auth_pb2_grpc.AuthServiceServicer):
    def __init__(
        self,
        signin: SignIn,
        email: EmailSignIn,
        users: UserRepository,
        keys: KeyRing,
        erasure: AccountErasure | None = None,
    ) -> None:
        self._signin = signin
        self._erasure = erasure
        self._email = email
        self._users = users
        self._keys = keys

    async def RequestCode(
        self, request: auth_pb2.RequestCodeRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.RequestCodeResponse:
        phone = await self._signin.request_code(request.phone)
        return auth_pb2.RequestCodeResponse(phone=phone, expires_in=self._signin.code_ttl_seconds)

    async def VerifyCode(
        self, request: auth_pb2.VerifyCodeRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.VerifyCodeResponse:
        tokens, user = await self._signin.verify_code(request.phone, request.code)
        return auth_pb2.VerifyCodeResponse(tokens=token_message(tokens), user=user_message(user))

    async def RefreshToken(
        self, request: auth_pb2.RefreshTokenRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.RefreshTokenResponse:
        tokens = await self._signin.refresh(request.refresh_token)
        return auth_pb2.RefreshTokenResponse(tokens=token_message(tokens))

    async def Logout(
        self, request: auth_pb2.LogoutRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.LogoutResponse:
        await self._signin.logout(require_principal().session_id)
        return auth_pb2.LogoutResponse()

    async def DeleteAccount(
        self, request: auth_pb2.DeleteAccountRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.DeleteAccountResponse:
        if self._erasure is None:
            raise Unavailable("accounts cannot be erased here", reason="erasure-unavailable")
        erasure_id = await self._erasure.erase(require_principal().user_id)
        return auth_pb2.DeleteAccountResponse(erasure_id=erasure_id)

    async def GetMe(self, request: auth_pb2.GetMeRequest, context: grpc.aio.ServicerContext) -> auth_pb2.GetMeResponse:
        user = await self._users.get(require_principal().user_id)
        if user is None:
            raise NotFound("this user no longer exists")
        return auth_pb2.GetMeResponse(user=user_message(user))

    async def GetJwks(
        self, request: auth_pb2.GetJwksRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.GetJwksResponse:
        return auth_pb2.GetJwksResponse(jwks_json=self._keys.jwks_json())

    async def ListUsers(
        self, request: auth_pb2.ListUsersRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.ListUsersResponse:
        limit = min(max(request.limit or 50, 1), 200)
        phone = self._signin.parse_phone(request.phone) if request.phone else ""
        users, next_cursor = await self._users.list(limit, request.cursor, phone)
        return auth_pb2.ListUsersResponse(users=[user_message(u) for u in users], next_cursor=next_cursor)

    async def CountUsers(
        self, request: auth_pb2.CountUsersRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.CountUsersResponse:
        users, admins = await self._users.count()
        return auth_pb2.CountUsersResponse(users=users, admins=admins)

    async def AddEmail(
        self, request: auth_pb2.AddEmailRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.AddEmailResponse:
        email = await self._email.add_email(require_principal().user_id, request.email)
        return auth_pb2.AddEmailResponse(email=email, expires_in=self._email.code_ttl_seconds)

    async def ConfirmEmail(
        self, request: auth_pb2.ConfirmEmailRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.ConfirmEmailResponse:
        user = await self._email.confirm_email(require_principal().user_id, request.email, request.code)
        return auth_pb2.ConfirmEmailResponse(user=user_message(user))

    async def RequestEmailCode(
        self, request: auth_pb2.RequestEmailCodeRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.RequestEmailCodeResponse:
        await self._email.request_code(request.email)
        return auth_pb2.RequestEmailCodeResponse(expires_in=self._email.code_ttl_seconds)

    async def VerifyEmailCode(
        self, request: auth_pb2.VerifyEmailCodeRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.VerifyEmailCodeResponse:
        tokens, user = await self._email.verify_code(request.email, request.code)
        return auth_pb2.VerifyEmailCodeResponse(tokens=token_message(tokens), user=user_message(user))

    async def SetUserBanned(
        self, request: auth_pb2.SetUserBannedRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.SetUserBannedResponse:
        if request.user_id == require_principal().user_id:
            raise InvalidArgument("admins cannot ban themselves", reason="cannot-ban-self")
        user = await self._signin.set_banned(request.user_id, request.banned)
        return auth_pb2.SetUserBannedResponse(user=user_message(user))

    async def GetUser(
        self, request: auth_pb2.GetUserRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.GetUserResponse:
        return auth_pb2.GetUserResponse(user=user_message(await self._users.get_by_id(request.user_id)))
