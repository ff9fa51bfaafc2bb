"""The sign-in flow: request a code by SMS, verify it, refresh and end sessions.

Answers never tell whether a number has an account: a banned user's request is answered
like any other, and no code is sent."""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from auth_service.metrics import CODE_RESULTS, CODE_SEND_FAILURES, CODE_VERIFICATIONS, CODES_SENT, SIGN_INS
from auth_service.otp import OtpStore, Verification
from auth_service.phones import PhonePolicy
from auth_service.sessions import SessionStore
from auth_service.sms import SmsSender, SmsSendError
from auth_service.throttling import SignInThrottle
from auth_service.tokens import AccessTokenIssuer
from auth_service.users import User, UserRepository
from facerestore_common.activity import ActivityRecorder
from facerestore_common.errors import PermissionDenied, Unauthenticated, Unavailable
from facerestore_common.logging import client_ip_var, get_logger, mask_phone

log = get_logger(__name__)


@dataclass(frozen=True)
class Tokens:
    access_token: str
    refresh_token: str
    expires_in: int


def is_code_shaped(code: str) -> bool:
    # isdigit() alone accepts full-width and superscript digits, which can never match.
    return len(code) == 6 and code.isascii() and code.isdigit()


class SignIn:
    def __init__(
        self,
        otp: OtpStore,
        sms: SmsSender,
        users: UserRepository,
        sessions: SessionStore,
        access_tokens: AccessTokenIssuer,
        admin_phones: list[str],
        default_region: str = "",
        *,
        phone_policy: PhonePolicy | None = None,
        throttle: SignInThrottle | None = None,
        test_codes: dict[str, str] | None = None,
        activity: ActivityRecorder | None = None,
    ) -> None:
        self._otp = otp
        self._sms = sms
        self.users = users
        self.sessions = sessions
        self._access_tokens = access_tokens
        self._admin_phones = set(admin_phones)
        self._phones = phone_policy or PhonePolicy(default_region)
        self._throttle = throttle
        self._test_codes = dict(test_codes or {})
        self._activity = activity
        # Every series from the start, at 0: an alert on failures has something to read before the first one.
        CODES_SENT.labels("sms", sms.name)
        CODE_SEND_FAILURES.labels("sms", sms.name)
        for result in CODE_RESULTS:
            CODE_VERIFICATIONS.labels("sms", result)

    @property
    def code_ttl_seconds(self) -> int:
        return self._otp.ttl_seconds

    def normalize(self, phone: str) -> str:
        return self._phones.normalize(phone)

    def parse_phone(self, phone: str) -> str:
        return self._phones.parse(phone)

    async def request_code(self, raw_phone: str) -> str:
        phone = self.normalize(raw_phone)
        if self._throttle is not None:
            await self._throttle.code_request(f"phone:{phone}", client_ip_var.get())
        if phone in self._test_codes:
            log.info("test_number_code_skipped", phone=mask_phone(phone))
            return phone
        user = await self.users.by_phone(phone)
        if user is not None and user.banned:
            log.info("code_withheld_from_banned_user", user_id=user.id)
            return phone
        code = await self._otp.issue(phone)
        minutes = max(1, self._otp.ttl_seconds // 60)
        user_id = user.id if user is not None else ""
        try:
            await self._sms.send(phone, f"Your sign-in code is {code}. It expires in {minutes} minutes.")
        except SmsSendError as error:
            await self._otp.discard(phone)
            log.error("sms_send_failed", provider=self._sms.name, phone=mask_phone(phone), error=str(error))
            CODE_SEND_FAILURES.labels("sms", self._sms.name).inc()
            await self.record("code.send_failed", user_id, channel="sms", provider=self._sms.name)
            raise Unavailable("the code could not be sent; try again later", reason="sms-unavailable") from error
        log.info("code_sent", provider=self._sms.name, phone=mask_phone(phone))
        CODES_SENT.labels("sms", self._sms.name).inc()
        await self.record("code.sent", user_id, channel="sms", provider=self._sms.name)
        return phone

    async def verify_code(self, raw_phone: str, code: str) -> tuple[Tokens, User]:
        phone = self.normalize(raw_phone)
        code = code.strip()
        if self._throttle is not None:
            await self._throttle.verification(f"phone:{phone}")
        result = await self._check_code(phone, code)
        CODE_VERIFICATIONS.labels("sms", result).inc()
        existing = await self.users.by_phone(phone)
        known_id = existing.id if existing is not None else ""
        if result != Verification.OK.value:
            await self.record("code.failed", known_id, channel="sms", result=result)
            raise Unauthenticated("the code is wrong, used or expired", reason="invalid-code")
        await self.record("code.verified", known_id, channel="sms")
        if existing is not None and existing.banned:
            # Refused before anything about the account changes (last login, promotion).
            raise Unauthenticated("the code is wrong, used or expired", reason="invalid-code")
        user = await self.users.sign_in(phone, promote_to_admin=phone in self._admin_phones)
        return await self.start_session(user), user

    async def _check_code(self, phone: str, code: str) -> str:
        """The verification's result: ok, wrong, missing (expired, used or never sent) or malformed."""
        if not is_code_shaped(code):
            log.info("code_refused", phone=mask_phone(phone), result="malformed")
            return "malformed"
        if phone in self._test_codes:
            return Verification.OK.value if hmac.compare_digest(self._test_codes[phone], code) else "wrong"
        result = await self._otp.verify(phone, code)
        if result is not Verification.OK:
            log.info("code_refused", phone=mask_phone(phone), result=result.value)
        return result.value

    async def record(self, kind: str, user_id: str = "", **labels: str) -> None:
        """Record activity for the admins' statistics; a record that cannot be written is logged,
        never a reason to fail the sign-in itself."""
        if self._activity is None:
            return
        try:
            await self._activity.record(kind, user_id, **labels)
        except Exception:
            log.error("activity_not_recorded", kind=kind, exc_info=True)

    async def start_session(self, user: User, channel: str = "sms") -> Tokens:
        grant = await self.sessions.start(user.id)
        log.info("signed_in", user_id=user.id, role=user.role, session_id=grant.session_id, channel=channel)
        SIGN_INS.labels(channel).inc()
        await self.record("user.signed_in", user.id, channel=channel)
        return self._tokens(user, grant.session_id, grant.refresh_token)

    async def refresh(self, refresh_token: str) -> Tokens:
        try:
            grant = await self.sessions.rotate(refresh_token)
        except Unauthenticated:
            # A ban ends the user's sessions, so their refresh token no longer rotates; its
            # holder is told the account is suspended rather than to sign in again.
            owner = await self.sessions.owner(refresh_token)
            suspended = owner is not None and (banned := await self.users.get(owner)) is not None and banned.banned
            if suspended:
                raise PermissionDenied("this account is suspended", reason="account-suspended") from None
            raise
        user = await self.users.get(grant.user_id)
        if user is None:
            await self.sessions.revoke(grant.session_id)
            raise Unauthenticated("the refresh token is not valid", reason="invalid-refresh-token")
        if user.banned:
            await self.sessions.revoke(grant.session_id)
            raise PermissionDenied("this account is suspended", reason="account-suspended")
        return self._tokens(user, grant.session_id, grant.refresh_token)

    async def logout(self, session_id: str) -> None:
        await self.sessions.revoke(session_id)

    async def set_banned(self, user_id: str, banned: bool) -> User:
        user = await self.users.set_banned(user_id, banned)
        if banned:
            ended = await self.sessions.revoke_user(user_id)
            log.info("user_banned", user_id=user_id, sessions_ended=ended)
        else:
            log.info("user_unbanned", user_id=user_id)
        return user

    async def set_role(self, user_id: str, role: str, actor: str, via: str) -> User:
        """Change a role; the user's sessions end, since their tokens carry the old role."""
        user = await self.users.set_role(user_id, role, actor=actor, via=via)
        await self.sessions.revoke_user(user_id)
        return user

    def _tokens(self, user: User, session_id: str, refresh_token: str) -> Tokens:
        access = self._access_tokens.issue(user.id, user.role, session_id)
        return Tokens(access_token=access, refresh_token=refresh_token, expires_in=self._access_tokens.ttl_seconds)
