"""Email as a fallback sign-in, on real Redis and the Mongo stand-in, with codes carried by
the real SMTP sender to an aiosmtpd server on 127.0.0.1: a signed-in user adds an address
and confirms it, then signs in with a code sent there. Answers never tell whether an
address has an account."""

from __future__ import annotations

import re
from collections.abc import Iterator
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from motor.motor_asyncio import AsyncIOMotorDatabase
from redis.asyncio import Redis

from auth_service.email_sender import SmtpEmailSender
from auth_service.email_signin import EmailSignIn
from auth_service.keys import KeyRing, load_key_ring
from auth_service.otp import OtpStore
from auth_service.sessions import SessionStore
from auth_service.settings import Settings
from auth_service.signin import SignIn
from auth_service.sms import OutboxSender
from auth_service.tokens import AccessTokenIssuer
from auth_service.users import User, UserRepository
from facerestore_common.errors import Conflict, Unauthenticated, Unavailable
from facerestore_common.revocation import SessionRevocations
from facerestore_common.tokens import JwksCache, TokenVerifier

ISSUER = "facerestore-auth"
AUDIENCE = "facerestore"
ANNA_PHONE = "+4915123456789"
BORIS_PHONE = "+4915198765432"
ANNA_EMAIL = "anna@example.org"


class RecordingHandler:
    """Accepts every message and keeps its envelope."""

    def __init__(self) -> None:
        self.envelopes: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd hook
        self.envelopes.append(envelope)
        return "250 Message accepted for delivery"

    def codes_to(self, address: str) -> list[str]:
        codes = []
        for envelope in self.envelopes:
            if envelope.rcpt_tos == [address]:
                body = message_from_bytes(envelope.content, policy=policy.default).get_body().get_content()
                (code,) = re.findall(r"\b\d{6}\b", body)
                codes.append(code)
        return codes


class RefusingHandler(RecordingHandler):
    """Reads the whole message (so the test sees the code it carried), then refuses it."""

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd hook
        self.envelopes.append(envelope)
        return "550 mailbox unavailable"


class EphemeralPortController(Controller):
    """A Controller bound to a port the kernel picks (port 0), so parallel runs never collide."""

    def _trigger_server(self) -> None:
        assert self.server is not None
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


def _serve(handler: RecordingHandler) -> Iterator[Controller]:
    controller = EphemeralPortController(handler, hostname="127.0.0.1", port=0, server_hostname="smtp.test")
    controller.start()
    try:
        yield controller
    finally:
        controller.stop()


@pytest.fixture
def mailbox() -> RecordingHandler:
    return RecordingHandler()


@pytest.fixture
def smtp_server(mailbox: RecordingHandler) -> Iterator[Controller]:
    yield from _serve(mailbox)


@pytest.fixture
def key_ring(tmp_path: Path) -> KeyRing:
    return load_key_ring(tmp_path / "keys", create_if_empty=True)


@pytest.fixture
async def users(database: AsyncIOMotorDatabase) -> UserRepository:
    repository = UserRepository(database)
    await repository.create_indexes()
    return repository


@pytest.fixture
def verifier(key_ring: KeyRing, redis: Redis, unique_name: str) -> TokenVerifier:
    async def fetch() -> str:
        return key_ring.jwks_json()

    revocations = SessionRevocations(redis, unique_name)
    return TokenVerifier(JwksCache(fetch, 300), ISSUER, AUDIENCE, leeway_seconds=0, revocations=revocations)


@pytest.fixture
def signin(
    redis: Redis,
    unique_name: str,
    database: AsyncIOMotorDatabase,
    users: UserRepository,
    key_ring: KeyRing,
    tmp_path: Path,
) -> SignIn:
    return SignIn(
        otp=OtpStore(redis, b"test-otp-secret", 300, 5, prefix=f"{unique_name}:otp"),
        sms=OutboxSender(str(tmp_path / "sms.jsonl")),
        users=users,
        sessions=SessionStore(database, 3600, SessionRevocations(redis, unique_name), 900),
        access_tokens=AccessTokenIssuer(key_ring, ISSUER, AUDIENCE, 900),
        admin_phones=[],
    )


def build_email_signin(signin: SignIn, redis: Redis, unique_name: str, smtp_port: int) -> EmailSignIn:
    settings = Settings(smtp_host="127.0.0.1", smtp_port=smtp_port, smtp_timeout_seconds=5.0)
    return EmailSignIn(
        signin,
        confirmations=OtpStore(redis, b"test-otp-secret", 300, 5, prefix=f"{unique_name}:email-confirm"),
        sign_in_codes=OtpStore(redis, b"test-otp-secret", 300, 5, prefix=f"{unique_name}:email-otp"),
        sender=SmtpEmailSender(settings),
    )


@pytest.fixture
def email(signin: SignIn, redis: Redis, unique_name: str, smtp_server: Controller) -> EmailSignIn:
    return build_email_signin(signin, redis, unique_name, smtp_server.port)


@pytest.fixture
async def anna(users: UserRepository) -> User:
    return await users.sign_in(ANNA_PHONE, promote_to_admin=False)


async def confirmed(email: EmailSignIn, mailbox: RecordingHandler, user: User, address: str) -> User:
    await email.add_email(user.id, address)
    return await email.confirm_email(user.id, address, mailbox.codes_to(address.lower())[-1])


def wrong(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


# --- adding and confirming an address -------------------------------------------------


async def test_adding_an_address_sends_a_confirmation_code_there(
    email: EmailSignIn, mailbox: RecordingHandler, anna: User
) -> None:
    assert await email.add_email(anna.id, "  Anna@Example.ORG ") == ANNA_EMAIL

    (envelope,) = mailbox.envelopes
    assert envelope.rcpt_tos == [ANNA_EMAIL]
    message = message_from_bytes(envelope.content, policy=policy.default)
    assert message["Subject"] == "Confirm your email address"
    (code,) = mailbox.codes_to(ANNA_EMAIL)
    assert message.get_body().get_content().strip() == (
        f"Your code to confirm this address is {code}. It expires in 5 minutes."
    )


async def test_confirming_with_the_code_gives_the_user_the_address(
    email: EmailSignIn, mailbox: RecordingHandler, anna: User, users: UserRepository
) -> None:
    await email.add_email(anna.id, ANNA_EMAIL)

    user = await email.confirm_email(anna.id, "ANNA@example.org", mailbox.codes_to(ANNA_EMAIL)[0])

    assert user.email == ANNA_EMAIL
    stored = await users.get(anna.id)
    assert stored is not None and stored.email == ANNA_EMAIL
    found = await users.by_email(ANNA_EMAIL)
    assert found is not None and found.id == anna.id


async def test_a_wrong_confirmation_code_is_refused_and_the_address_not_set(
    email: EmailSignIn, mailbox: RecordingHandler, anna: User, users: UserRepository
) -> None:
    await email.add_email(anna.id, ANNA_EMAIL)

    with pytest.raises(Unauthenticated) as caught:
        await email.confirm_email(anna.id, ANNA_EMAIL, wrong(mailbox.codes_to(ANNA_EMAIL)[0]))

    assert caught.value.reason == "invalid-code"
    stored = await users.get(anna.id)
    assert stored is not None and stored.email == ""
    assert await users.by_email(ANNA_EMAIL) is None


async def test_a_confirmation_code_works_only_for_the_user_who_asked(
    email: EmailSignIn, mailbox: RecordingHandler, anna: User, users: UserRepository
) -> None:
    boris = await users.sign_in(BORIS_PHONE, promote_to_admin=False)
    await email.add_email(anna.id, ANNA_EMAIL)

    with pytest.raises(Unauthenticated):
        await email.confirm_email(boris.id, ANNA_EMAIL, mailbox.codes_to(ANNA_EMAIL)[0])

    assert await users.by_email(ANNA_EMAIL) is None


async def test_an_address_another_user_owns_cannot_be_confirmed(
    email: EmailSignIn, mailbox: RecordingHandler, anna: User, users: UserRepository
) -> None:
    await confirmed(email, mailbox, anna, ANNA_EMAIL)
    boris = await users.sign_in(BORIS_PHONE, promote_to_admin=False)
    await email.add_email(boris.id, ANNA_EMAIL)  # answered as any other; the code goes to Anna's box

    with pytest.raises(Conflict) as caught:
        await email.confirm_email(boris.id, ANNA_EMAIL, mailbox.codes_to(ANNA_EMAIL)[-1])

    assert caught.value.reason == "email-taken"
    owner = await users.by_email(ANNA_EMAIL)
    assert owner is not None and owner.id == anna.id
    stored_boris = await users.get(boris.id)
    assert stored_boris is not None and stored_boris.email == ""


async def test_confirming_a_new_address_releases_the_old_one(
    email: EmailSignIn, mailbox: RecordingHandler, anna: User, users: UserRepository
) -> None:
    await confirmed(email, mailbox, anna, ANNA_EMAIL)

    user = await confirmed(email, mailbox, anna, "anna@example.net")

    assert user.email == "anna@example.net"
    assert await users.by_email(ANNA_EMAIL) is None


# --- signing in with the address ------------------------------------------------------


async def test_a_code_sent_to_a_confirmed_address_signs_in_the_same_user(
    email: EmailSignIn, mailbox: RecordingHandler, anna: User, verifier: TokenVerifier
) -> None:
    await confirmed(email, mailbox, anna, ANNA_EMAIL)

    assert await email.request_code("Anna@Example.org") is None
    sign_in_code = mailbox.codes_to(ANNA_EMAIL)[-1]
    tokens, user = await email.verify_code(ANNA_EMAIL, sign_in_code)

    assert len(mailbox.envelopes) == 2
    assert user.id == anna.id
    principal = await verifier.verify(tokens.access_token)
    assert (principal.user_id, principal.role) == (anna.id, "user")
    assert user.last_login_at_ms >= anna.last_login_at_ms
    with pytest.raises(Unauthenticated):
        await email.verify_code(ANNA_EMAIL, sign_in_code)  # once only


async def test_a_confirmation_code_does_not_sign_in(email: EmailSignIn, mailbox: RecordingHandler, anna: User) -> None:
    await email.add_email(anna.id, ANNA_EMAIL)
    confirmation_code = mailbox.codes_to(ANNA_EMAIL)[0]
    await email.confirm_email(anna.id, ANNA_EMAIL, confirmation_code)

    with pytest.raises(Unauthenticated) as caught:
        await email.verify_code(ANNA_EMAIL, confirmation_code)

    assert caught.value.reason == "invalid-code"


async def test_an_unknown_address_gets_the_same_answer_and_no_email(
    email: EmailSignIn, mailbox: RecordingHandler, anna: User
) -> None:
    await confirmed(email, mailbox, anna, ANNA_EMAIL)
    sent_before = len(mailbox.envelopes)

    for_known = await email.request_code(ANNA_EMAIL)
    for_unknown = await email.request_code("nobody@example.org")

    assert for_known == for_unknown
    assert len(mailbox.envelopes) == sent_before + 1
    assert mailbox.codes_to("nobody@example.org") == []


async def test_a_wrong_sign_in_code_is_refused(email: EmailSignIn, mailbox: RecordingHandler, anna: User) -> None:
    await confirmed(email, mailbox, anna, ANNA_EMAIL)
    await email.request_code(ANNA_EMAIL)

    with pytest.raises(Unauthenticated) as caught:
        await email.verify_code(ANNA_EMAIL, wrong(mailbox.codes_to(ANNA_EMAIL)[-1]))

    assert caught.value.reason == "invalid-code"


async def test_a_banned_users_address_gets_no_code_and_an_earlier_code_is_refused(
    email: EmailSignIn, mailbox: RecordingHandler, anna: User, signin: SignIn
) -> None:
    await confirmed(email, mailbox, anna, ANNA_EMAIL)
    await email.request_code(ANNA_EMAIL)
    code_before_the_ban = mailbox.codes_to(ANNA_EMAIL)[-1]
    sent_before = len(mailbox.envelopes)

    await signin.set_banned(anna.id, True)

    assert await email.request_code(ANNA_EMAIL) is None
    assert len(mailbox.envelopes) == sent_before
    with pytest.raises(Unauthenticated) as caught:
        await email.verify_code(ANNA_EMAIL, code_before_the_ban)
    assert caught.value.reason == "invalid-code"


# --- when the mail server refuses -----------------------------------------------------


@pytest.fixture
def refusing_mailbox() -> RecordingHandler:
    return RefusingHandler()


@pytest.fixture
def refusing_smtp_server(refusing_mailbox: RecordingHandler) -> Iterator[Controller]:
    yield from _serve(refusing_mailbox)


async def test_a_refused_confirmation_is_unavailable_and_its_code_does_not_work(
    signin: SignIn,
    redis: Redis,
    unique_name: str,
    refusing_smtp_server: Controller,
    refusing_mailbox: RecordingHandler,
    anna: User,
    users: UserRepository,
) -> None:
    email = build_email_signin(signin, redis, unique_name, refusing_smtp_server.port)

    with pytest.raises(Unavailable) as caught:
        await email.add_email(anna.id, ANNA_EMAIL)

    assert caught.value.reason == "email-unavailable"
    assert [key async for key in redis.scan_iter(match=f"{unique_name}:email-confirm:*")] == []
    (code_that_was_refused,) = refusing_mailbox.codes_to(ANNA_EMAIL)
    with pytest.raises(Unauthenticated):
        await email.confirm_email(anna.id, ANNA_EMAIL, code_that_was_refused)
    assert await users.by_email(ANNA_EMAIL) is None


async def test_a_refused_sign_in_code_is_unavailable_and_does_not_work(
    email: EmailSignIn,
    mailbox: RecordingHandler,
    signin: SignIn,
    redis: Redis,
    unique_name: str,
    refusing_smtp_server: Controller,
    refusing_mailbox: RecordingHandler,
    anna: User,
) -> None:
    await confirmed(email, mailbox, anna, ANNA_EMAIL)
    down = build_email_signin(signin, redis, unique_name, refusing_smtp_server.port)

    with pytest.raises(Unavailable) as caught:
        await down.request_code(ANNA_EMAIL)

    assert caught.value.reason == "email-unavailable"
    (code_that_was_refused,) = refusing_mailbox.codes_to(ANNA_EMAIL)
    with pytest.raises(Unauthenticated):
        await email.verify_code(ANNA_EMAIL, code_that_was_refused)
