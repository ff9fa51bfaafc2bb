"""The sign-in flow: request a code, verify it, refresh and end sessions."""

from __future__ import annotations

from dataclasses import dataclass

from auth_service.otp import OtpStore, Verification
from auth_service.phones import normalize_phone
from auth_service.sessions import SessionStore
from auth_service.sms import SmsSender, SmsSendError
from auth_service.tokens import AccessTokenIssuer
from auth_service.users import User, UserRepository
from facerestore_common.errors import Unauthenticated, Unavailable
from facerestore_common.logging import get_logger, mask_phone

log = get_logger(__name__)


@dataclass(frozen=True)
class Tokens:
    access_token: str
    refresh_token: str
    expires_in: int


class SignIn:
    def __init__(
        self,
        otp: OtpStore,
        sms: SmsSender,
        users: UserRepository,
        sessions: SessionStore,
        access_tokens: AccessTokenIssuer,
        admin_phones: list[str],
        default_region: str,
    ) -> None:
        self._otp = otp
        self._sms = sms
        self._users = users
        self._sessions = sessions
        self._access_tokens = access_tokens
        self._admin_phones = set(admin_phones)
        self._default_region = default_region

    @property
    def code_ttl_seconds(self) -> int:
        return self._otp.ttl_seconds

    def normalize(self, phone: str) -> str:
        return normalize_phone(phone, self._default_region)

    async def request_code(self, raw_phone: str) -> str:
        phone = self.normalize(raw_phone)
        code = await self._otp.issue(phone)
        minutes = max(1, self._otp.ttl_seconds // 60)
        try:
            await self._sms.send(phone, f"Your sign-in code is {code}. It expires in {minutes} minutes.")
        except SmsSendError as error:
            await self._otp.discard(phone)
            log.error("sms_send_failed", provider=self._sms.name, phone=mask_phone(phone), error=str(error))
            raise Unavailable("the code could not be sent; try again later", reason="sms-unavailable") from error
        log.info("code_sent", provider=self._sms.name, phone=mask_phone(phone))
        return phone

    async def verify_code(self, raw_phone: str, code: str) -> tuple[Tokens, User]:
        phone = self.normalize(raw_phone)
        code = code.strip()
        result = Verification.WRONG
        # ASCII only: str.isdigit() also accepts full-width and superscript digits, which
        # can never match and would only use up a try.
        if len(code) == 6 and code.isascii() and code.isdigit():
            result = await self._otp.verify(phone, code)
        if result is not Verification.OK:
            log.info("code_refused", phone=mask_phone(phone), result=result.value)
            raise Unauthenticated("the code is wrong, used or expired", reason="invalid-code")
        user = await self._users.sign_in(phone, promote_to_admin=phone in self._admin_phones)
        grant = await self._sessions.start(user.id)
        log.info("signed_in", user_id=user.id, role=user.role, session_id=grant.session_id)
        return self._tokens(user, grant.session_id, grant.refresh_token), user

    async def refresh(self, refresh_token: str) -> Tokens:
        grant = await self._sessions.rotate(refresh_token)
        user = await self._users.get(grant.user_id)
        if user is None:
            await self._sessions.revoke(grant.session_id)
            raise Unauthenticated("the refresh token is not valid", reason="invalid-refresh-token")
        return self._tokens(user, grant.session_id, grant.refresh_token)

    async def logout(self, session_id: str) -> None:
        await self._sessions.revoke(session_id)

    def _tokens(self, user: User, session_id: str, refresh_token: str) -> Tokens:
        access = self._access_tokens.issue(user.id, user.role, session_id)
        return Tokens(access_token=access, refresh_token=refresh_token, expires_in=self._access_tokens.ttl_seconds)
