"""The sign-in flow end to end on real Redis and the Mongo stand-in, with the SMS written
to an outbox file as the local carrier does: request a code, read it from the outbox,
verify it, refresh, log out."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from motor.motor_asyncio import AsyncIOMotorDatabase
from redis.asyncio import Redis
from structlog.testing import capture_logs

from auth_service.keys import KeyRing, load_key_ring
from auth_service.otp import OtpStore
from auth_service.sessions import SessionStore
from auth_service.signin import SignIn, Tokens
from auth_service.sms import OutboxSender, SmsSender, SmsSendError
from auth_service.tokens import AccessTokenIssuer
from auth_service.users import User, UserRepository
from facerestore_common.errors import InvalidArgument, Unauthenticated, Unavailable
from facerestore_common.tokens import JwksCache, TokenVerifier

ADMIN_PHONE = "+4915100000001"
USER_PHONE = "+4915123456789"
ISSUER = "facerestore-auth"
AUDIENCE = "facerestore"
MAX_ATTEMPTS = 3


class FailingSender:
    """An SMS provider that is down: it sees the message, then refuses it."""

    name = "failing"

    def __init__(self) -> None:
        self.bodies: list[str] = []

    async def send(self, to: str, body: str) -> None:
        self.bodies.append(body)
        raise SmsSendError("provider answered 503")


@pytest.fixture
def key_ring(tmp_path: Path) -> KeyRing:
    return load_key_ring(tmp_path / "keys", create_if_empty=True)


@pytest.fixture
def outbox(tmp_path: Path) -> Path:
    return tmp_path / "sms" / "outbox.jsonl"


@pytest.fixture
def otp(redis: Redis, unique_name: str) -> OtpStore:
    return OtpStore(redis, b"test-otp-secret", ttl_seconds=300, max_attempts=MAX_ATTEMPTS, prefix=unique_name)


@pytest.fixture
async def users(database: AsyncIOMotorDatabase) -> UserRepository:
    repository = UserRepository(database)
    await repository.create_indexes()
    return repository


def build_signin(otp: OtpStore, sms: SmsSender, database: AsyncIOMotorDatabase, key_ring: KeyRing) -> SignIn:
    return SignIn(
        otp=otp,
        sms=sms,
        users=UserRepository(database),
        sessions=SessionStore(database, ttl_seconds=3600),
        access_tokens=AccessTokenIssuer(key_ring, ISSUER, AUDIENCE, ttl_seconds=900),
        admin_phones=[ADMIN_PHONE],
        default_region="DE",
    )


@pytest.fixture
def signin(
    otp: OtpStore, outbox: Path, database: AsyncIOMotorDatabase, key_ring: KeyRing, users: UserRepository
) -> SignIn:
    return build_signin(otp, OutboxSender(str(outbox)), database, key_ring)


@pytest.fixture
def verifier(key_ring: KeyRing) -> TokenVerifier:
    async def fetch() -> str:
        return key_ring.jwks_json()

    return TokenVerifier(JwksCache(fetch, 300), ISSUER, AUDIENCE, leeway_seconds=0)


def outbox_lines(outbox: Path) -> list[dict[str, str]]:
    if not outbox.exists():
        return []
    return [json.loads(line) for line in outbox.read_text(encoding="utf-8").splitlines()]


def code_in(message: dict[str, str]) -> str:
    found = re.findall(r"\b\d{6}\b", message["body"])
    assert len(found) == 1, message["body"]
    return found[0]


async def sign_in(signin: SignIn, outbox: Path, phone: str) -> tuple[Tokens, User]:
    await signin.request_code(phone)
    return await signin.verify_code(phone, code_in(outbox_lines(outbox)[-1]))


# --- requesting a code ----------------------------------------------------------------


async def test_request_code_writes_one_outbox_line_with_the_code_and_the_e164_number(
    signin: SignIn, outbox: Path
) -> None:
    before = datetime.now(UTC)

    phone = await signin.request_code("0151 2345 6789")  # national form, default region DE

    assert phone == USER_PHONE
    (message,) = outbox_lines(outbox)
    assert set(message) == {"to", "body", "sent_at"}
    assert message["to"] == USER_PHONE
    code = code_in(message)
    assert message["body"] == f"Your sign-in code is {code}. It expires in 5 minutes."
    sent_at = datetime.fromisoformat(message["sent_at"])
    assert sent_at.tzinfo is not None
    assert before - timedelta(seconds=1) <= sent_at <= datetime.now(UTC)


async def test_each_request_sends_a_new_code_and_only_the_newest_works(signin: SignIn, outbox: Path) -> None:
    await signin.request_code(USER_PHONE)
    await signin.request_code(USER_PHONE)
    first, second = (code_in(message) for message in outbox_lines(outbox))
    if first == second:  # one chance in a million
        pytest.skip("the two random codes happened to be equal")

    with pytest.raises(Unauthenticated):
        await signin.verify_code(USER_PHONE, first)
    tokens, _ = await signin.verify_code(USER_PHONE, second)
    assert tokens.access_token


async def test_invalid_phone_sends_nothing(signin: SignIn, outbox: Path) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await signin.request_code("+44 20 7123 4567")

    assert caught.value.reason == "invalid-phone"
    assert outbox_lines(outbox) == []


async def test_failing_sms_provider_makes_request_code_unavailable_and_leaves_no_code(
    otp: OtpStore, database: AsyncIOMotorDatabase, key_ring: KeyRing, redis: Redis, unique_name: str
) -> None:
    sender = FailingSender()
    signin = build_signin(otp, sender, database, key_ring)

    with pytest.raises(Unavailable) as caught:
        await signin.request_code(USER_PHONE)

    assert caught.value.reason == "sms-unavailable"
    assert [key async for key in redis.scan_iter(match=f"{unique_name}:*")] == []
    # Even the code the provider was handed does not work.
    (body,) = sender.bodies
    (code,) = re.findall(r"\b\d{6}\b", body)
    with pytest.raises(Unauthenticated) as refused:
        await signin.verify_code(USER_PHONE, code)
    assert refused.value.reason == "invalid-code"
    assert await database["users"].count_documents({}) == 0


# --- verifying it ---------------------------------------------------------------------


async def test_verify_code_returns_tokens_and_creates_a_user(
    signin: SignIn, outbox: Path, verifier: TokenVerifier, database: AsyncIOMotorDatabase
) -> None:
    tokens, user = await sign_in(signin, outbox, USER_PHONE)

    assert user.phone == USER_PHONE
    assert user.role == "user"
    assert tokens.expires_in == 900
    assert tokens.refresh_token
    principal = await verifier.verify(tokens.access_token)
    assert principal.user_id == user.id
    assert principal.role == "user"
    doc = await database["users"].find_one({"phone": USER_PHONE})
    assert doc is not None
    assert doc["_id"] == user.id
    assert doc["role"] == "user"
    assert doc["created_at_ms"] == user.created_at_ms
    assert await database["users"].count_documents({}) == 1


async def test_phone_in_admin_phones_signs_in_as_admin(signin: SignIn, outbox: Path, verifier: TokenVerifier) -> None:
    tokens, user = await sign_in(signin, outbox, "+49 151 0000 0001")

    assert user.phone == ADMIN_PHONE
    assert user.role == "admin"
    assert (await verifier.verify(tokens.access_token)).role == "admin"


async def test_signing_in_twice_is_the_same_user(
    signin: SignIn, outbox: Path, verifier: TokenVerifier, database: AsyncIOMotorDatabase
) -> None:
    first_tokens, first = await sign_in(signin, outbox, USER_PHONE)
    second_tokens, second = await sign_in(signin, outbox, "0151 23456789")

    assert second.id == first.id
    assert second.role == "user"
    assert second.created_at_ms == first.created_at_ms
    assert second.last_login_at_ms >= first.last_login_at_ms
    assert await database["users"].count_documents({}) == 1
    # Two sign-ins, two sessions.
    first_principal = await verifier.verify(first_tokens.access_token)
    second_principal = await verifier.verify(second_tokens.access_token)
    assert first_principal.user_id == second_principal.user_id == first.id
    assert first_principal.session_id != second_principal.session_id


async def test_code_works_only_once(signin: SignIn, outbox: Path) -> None:
    await signin.request_code(USER_PHONE)
    code = code_in(outbox_lines(outbox)[-1])
    await signin.verify_code(USER_PHONE, code)

    with pytest.raises(Unauthenticated) as caught:
        await signin.verify_code(USER_PHONE, code)
    assert caught.value.reason == "invalid-code"


async def test_code_with_surrounding_spaces_is_accepted(signin: SignIn, outbox: Path) -> None:
    await signin.request_code(USER_PHONE)
    code = code_in(outbox_lines(outbox)[-1])

    _, user = await signin.verify_code(USER_PHONE, f"  {code}\n")

    assert user.phone == USER_PHONE


async def test_wrong_codes_are_refused_and_use_up_the_tries(signin: SignIn, outbox: Path) -> None:
    await signin.request_code(USER_PHONE)
    code = code_in(outbox_lines(outbox)[-1])
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"

    for _ in range(MAX_ATTEMPTS):
        with pytest.raises(Unauthenticated) as caught:
            await signin.verify_code(USER_PHONE, wrong)
        assert caught.value.reason == "invalid-code"

    with pytest.raises(Unauthenticated):
        await signin.verify_code(USER_PHONE, code)


@pytest.mark.parametrize(
    "malformed",
    [
        pytest.param("", id="empty"),
        pytest.param("12345", id="five-digits"),
        pytest.param("1234567", id="seven-digits"),
        pytest.param("12a456", id="letter"),
        pytest.param("\uff11\uff12\uff13\uff14\uff15\uff16", id="full-width-digits"),
        pytest.param("\u00b9\u00b2\u00b3\u2074\u2075\u2076", id="superscript-digits"),
    ],
)
async def test_malformed_codes_are_refused_without_using_up_a_try(signin: SignIn, outbox: Path, malformed: str) -> None:
    await signin.request_code(USER_PHONE)
    code = code_in(outbox_lines(outbox)[-1])

    for _ in range(MAX_ATTEMPTS):
        with pytest.raises(Unauthenticated):
            await signin.verify_code(USER_PHONE, malformed)

    _, user = await signin.verify_code(USER_PHONE, code)
    assert user.phone == USER_PHONE


async def test_code_for_one_phone_does_not_sign_in_another(signin: SignIn, outbox: Path) -> None:
    await signin.request_code(USER_PHONE)
    code = code_in(outbox_lines(outbox)[-1])

    with pytest.raises(Unauthenticated):
        await signin.verify_code(ADMIN_PHONE, code)


# --- after signing in -----------------------------------------------------------------


async def test_refresh_gives_new_tokens_for_the_same_session(
    signin: SignIn, outbox: Path, verifier: TokenVerifier
) -> None:
    tokens, user = await sign_in(signin, outbox, USER_PHONE)
    session_id = (await verifier.verify(tokens.access_token)).session_id

    refreshed = await signin.refresh(tokens.refresh_token)

    assert refreshed.refresh_token != tokens.refresh_token
    principal = await verifier.verify(refreshed.access_token)
    assert (principal.user_id, principal.session_id, principal.role) == (user.id, session_id, "user")
    with pytest.raises(Unauthenticated):
        await signin.refresh(tokens.refresh_token)  # the spent one


async def test_logout_ends_the_session(signin: SignIn, outbox: Path, verifier: TokenVerifier) -> None:
    tokens, _ = await sign_in(signin, outbox, USER_PHONE)
    session_id = (await verifier.verify(tokens.access_token)).session_id

    await signin.logout(session_id)

    with pytest.raises(Unauthenticated) as caught:
        await signin.refresh(tokens.refresh_token)
    assert caught.value.reason == "invalid-refresh-token"


async def test_refresh_of_a_deleted_user_is_refused(
    signin: SignIn, outbox: Path, database: AsyncIOMotorDatabase
) -> None:
    tokens, user = await sign_in(signin, outbox, USER_PHONE)
    await database["users"].delete_one({"_id": user.id})

    with pytest.raises(Unauthenticated) as caught:
        await signin.refresh(tokens.refresh_token)
    assert caught.value.reason == "invalid-refresh-token"


async def test_logs_never_hold_the_code_or_the_full_phone(signin: SignIn, outbox: Path) -> None:
    with capture_logs() as logs:
        await signin.request_code(USER_PHONE)
        code = code_in(outbox_lines(outbox)[-1])
        with pytest.raises(Unauthenticated):
            await signin.verify_code(USER_PHONE, f"{(int(code) + 1) % 1_000_000:06d}")
        await signin.verify_code(USER_PHONE, code)

    events = [entry["event"] for entry in logs]
    assert {"code_sent", "code_refused", "signed_in"} <= set(events)
    text = json.dumps(logs, default=str)
    assert code not in text
    assert USER_PHONE not in text
    assert USER_PHONE[3:] not in text
