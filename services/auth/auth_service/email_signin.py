"""Email as a fallback: a signed-in user adds an address and confirms it with a code sent
there; later they can sign in with a code sent to that address.

As with phones, answers never tell whether an address belongs to an account."""

from __future__ import annotations

from typing import Protocol

from auth_service.email_sender import EmailSendError, normalize_email
from auth_service.metrics import CODE_SEND_FAILURES, CODE_VERIFICATIONS, CODES_SENT
from auth_service.otp import OtpStore, Verification
from auth_service.signin import SignIn, Tokens, is_code_shaped
from auth_service.throttling import SignInThrottle
from auth_service.users import User
from facerestore_common.errors import Unauthenticated, Unavailable
from facerestore_common.logging import client_ip_var, get_logger

log = get_logger(__name__)


class EmailSender(Protocol):
    name: str

    async def send(self, to: str, subject: str, body: str) -> None: ...


class EmailSignIn:
    def __init__(
        self,
        signin: SignIn,
        confirmations: OtpStore,
        sign_in_codes: OtpStore,
        sender: EmailSender,
        throttle: SignInThrottle | None = None,
    ) -> None:
        self._signin = signin
        self._users = signin.users
        self._confirmations = confirmations
        self._codes = sign_in_codes
        self._sender = sender
        self._throttle = throttle
        CODES_SENT.labels("email", sender.name)
        CODE_SEND_FAILURES.labels("email", sender.name)

    @property
    def code_ttl_seconds(self) -> int:
        return self._codes.ttl_seconds

    async def _send(self, store: OtpStore, key: str, to: str, subject: str, purpose: str, user_id: str) -> None:
        code = await store.issue(key)
        minutes = max(1, store.ttl_seconds // 60)
        try:
            await self._sender.send(to, subject, f"Your code {purpose} is {code}. It expires in {minutes} minutes.")
        except EmailSendError as error:
            await store.discard(key)
            log.error("email_send_failed", provider=self._sender.name, error=str(error))
            CODE_SEND_FAILURES.labels("email", self._sender.name).inc()
            await self._signin.record("code.send_failed", user_id, channel="email", provider=self._sender.name)
            raise Unavailable("the code could not be sent; try again later", reason="email-unavailable") from error
        CODES_SENT.labels("email", self._sender.name).inc()
        await self._signin.record("code.sent", user_id, channel="email", provider=self._sender.name)

    async def _verified(self, store: OtpStore, key: str, code: str, user_id: str) -> bool:
        """Whether the code is the one sent; counted and recorded either way."""
        result = (await store.verify(key, code)).value if is_code_shaped(code) else "malformed"
        CODE_VERIFICATIONS.labels("email", result).inc()
        if result != Verification.OK.value:
            await self._signin.record("code.failed", user_id, channel="email", result=result)
            return False
        await self._signin.record("code.verified", user_id, channel="email")
        return True

    async def add_email(self, user_id: str, raw_email: str) -> str:
        email = normalize_email(raw_email)
        if self._throttle is not None:
            await self._throttle.code_request(f"email:{email}", client_ip_var.get())
        await self._send(
            self._confirmations,
            f"{user_id}:{email}",
            email,
            "Confirm your email address",
            "to confirm this address",
            user_id,
        )
        log.info("email_confirmation_sent", user_id=user_id)
        return email

    async def confirm_email(self, user_id: str, raw_email: str, code: str) -> User:
        email = normalize_email(raw_email)
        if self._throttle is not None:
            await self._throttle.verification(f"email:{email}")
        if not await self._verified(self._confirmations, f"{user_id}:{email}", code.strip(), user_id):
            raise Unauthenticated("the code is wrong, used or expired", reason="invalid-code")
        user = await self._users.set_email(user_id, email)
        log.info("email_confirmed", user_id=user_id)
        return user

    async def request_code(self, raw_email: str) -> None:
        email = normalize_email(raw_email)
        if self._throttle is not None:
            await self._throttle.code_request(f"email:{email}", client_ip_var.get())
        user = await self._users.by_email(email)
        if user is None or user.banned:
            log.info("email_code_not_sent", known=user is not None)
            return
        await self._send(self._codes, email, email, "Your sign-in code", "to sign in", user.id)
        log.info("email_code_sent", user_id=user.id)

    async def verify_code(self, raw_email: str, code: str) -> tuple[Tokens, User]:
        email = normalize_email(raw_email)
        if self._throttle is not None:
            await self._throttle.verification(f"email:{email}")
        user = await self._users.by_email(email)
        if not await self._verified(self._codes, email, code.strip(), user.id if user is not None else ""):
            raise Unauthenticated("the code is wrong, used or expired", reason="invalid-code")
        if user is None or user.banned:
            raise Unauthenticated("the code is wrong, used or expired", reason="invalid-code")
        await self._users.record_login(user.id)
        return await self._signin.start_session(user, channel="email"), user
