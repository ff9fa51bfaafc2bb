"""The rules around sign-in, on real Redis and the Mongo stand-in with SMS written to an
outbox file: limits on codes and tries, which countries get codes, fixed codes for test
numbers, answers that never tell whether a number has an account, and sessions that end
at once (logout, refresh-token reuse, bans, role changes) because the verifier reads the
deny-list of ended sessions."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from motor.motor_asyncio import AsyncIOMotorDatabase
from pydantic import ValidationError
from redis.asyncio import Redis

from auth_service.keys import KeyRing, load_key_ring
from auth_service.otp import OtpStore
from auth_service.phones import PhonePolicy
from auth_service.sessions import SessionStore
from auth_service.settings import Settings
from auth_service.signin import SignIn, Tokens
from auth_service.sms import OutboxSender
from auth_service.throttling import SignInThrottle
from auth_service.tokens import AccessTokenIssuer
from auth_service.users import User, UserRepository
from facerestore_common.errors import InvalidArgument, PermissionDenied, TooManyRequests, Unauthenticated, Unavailable
from facerestore_common.logging import client_ip_var
from facerestore_common.revocation import SessionRevocations
from facerestore_common.tokens import JwksCache, TokenVerifier

USER_PHONE = "+4915123456789"
OTHER_PHONE = "+4915198765432"
ADMIN_PHONE = "+4915100000001"
TEST_PHONE = "+4915100000099"
TEST_CODE = "246810"
FRENCH_MOBILE = "+33612345678"
ISSUER = "facerestore-auth"
AUDIENCE = "facerestore"
ACCESS_TTL = 900
OTP_MAX_ATTEMPTS = 10
UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"

SignInFactory = Callable[..., SignIn]


# --- fixtures -------------------------------------------------------------------------


@pytest.fixture
def key_ring(tmp_path: Path) -> KeyRing:
    return load_key_ring(tmp_path / "keys", create_if_empty=True)


@pytest.fixture
def outbox(tmp_path: Path) -> Path:
    return tmp_path / "sms" / "outbox.jsonl"


@pytest.fixture
def revocations(redis: Redis, unique_name: str) -> SessionRevocations:
    return SessionRevocations(redis, unique_name)


@pytest.fixture
async def users(database: AsyncIOMotorDatabase) -> UserRepository:
    repository = UserRepository(database)
    await repository.create_indexes()
    return repository


@pytest.fixture
async def sessions(database: AsyncIOMotorDatabase, revocations: SessionRevocations) -> SessionStore:
    store = SessionStore(database, 3600, revocations, access_token_ttl_seconds=ACCESS_TTL)
    await store.create_indexes()
    return store


@pytest.fixture
def make_throttle(redis_url: str, unique_name: str) -> Callable[..., SignInThrottle]:
    def make(**overrides: Any) -> SignInThrottle:
        options: dict[str, Any] = {
            "redis_url": redis_url,
            "prefix": f"{unique_name}:auth",  # keys start with unique_name: the redis fixture removes them
            "requests_per_identity": "100/hour",
            "requests_per_ip": "100/hour",
            "verifications_per_identity": "100/hour",
            "resend_cooldown_seconds": 0,
        } | overrides
        return SignInThrottle(**options)

    return make


@pytest.fixture
def make_signin(
    redis: Redis,
    unique_name: str,
    outbox: Path,
    users: UserRepository,
    sessions: SessionStore,
    key_ring: KeyRing,
    make_throttle: Callable[..., SignInThrottle],
) -> SignInFactory:
    def make(
        *,
        throttle: SignInThrottle | None = None,
        phone_policy: PhonePolicy | None = None,
        test_codes: dict[str, str] | None = None,
        admin_phones: list[str] | None = None,
    ) -> SignIn:
        return SignIn(
            otp=OtpStore(redis, b"test-otp-secret", 300, OTP_MAX_ATTEMPTS, prefix=f"{unique_name}:otp"),
            sms=OutboxSender(str(outbox)),
            users=users,
            sessions=sessions,
            access_tokens=AccessTokenIssuer(key_ring, ISSUER, AUDIENCE, ACCESS_TTL),
            admin_phones=admin_phones if admin_phones is not None else [ADMIN_PHONE],
            phone_policy=phone_policy or PhonePolicy("DE"),
            throttle=throttle or make_throttle(),
            test_codes=test_codes if test_codes is not None else {TEST_PHONE: TEST_CODE},
        )

    return make


@pytest.fixture
def signin(make_signin: SignInFactory) -> SignIn:
    return make_signin()


@pytest.fixture
def verifier(key_ring: KeyRing, revocations: SessionRevocations) -> TokenVerifier:
    async def fetch() -> str:
        return key_ring.jwks_json()

    return TokenVerifier(JwksCache(fetch, 300), ISSUER, AUDIENCE, leeway_seconds=0, revocations=revocations)


@pytest.fixture
def client_address() -> Iterator[Callable[[str], None]]:
    """Sets the client address the gateway would pass along; restored after the test."""
    token = client_ip_var.set("")
    yield client_ip_var.set
    client_ip_var.reset(token)


@pytest.fixture
async def unreachable_redis() -> AsyncIterator[Redis]:
    client = Redis.from_url(UNREACHABLE_REDIS, socket_connect_timeout=2)
    yield client
    await client.aclose()


# --- helpers --------------------------------------------------------------------------


def outbox_lines(outbox: Path) -> list[dict[str, str]]:
    if not outbox.exists():
        return []
    return [json.loads(line) for line in outbox.read_text(encoding="utf-8").splitlines()]


def last_code(outbox: Path) -> str:
    (code,) = re.findall(r"\b\d{6}\b", outbox_lines(outbox)[-1]["body"])
    return code


def wrong(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


async def sign_in(signin: SignIn, outbox: Path, phone: str) -> tuple[Tokens, User]:
    await signin.request_code(phone)
    return await signin.verify_code(phone, last_code(outbox))


async def assert_session_revoked(verifier: TokenVerifier, access_token: str) -> None:
    with pytest.raises(Unauthenticated) as caught:
        await verifier.verify(access_token)
    assert caught.value.reason == "session-revoked"


# --- limits on codes and tries --------------------------------------------------------


async def test_a_second_request_in_the_cooldown_is_refused_and_only_one_sms_is_sent(
    make_signin: SignInFactory, make_throttle: Callable[..., SignInThrottle], outbox: Path
) -> None:
    signin = make_signin(throttle=make_throttle(resend_cooldown_seconds=60))
    await signin.request_code(USER_PHONE)

    with pytest.raises(TooManyRequests) as caught:
        await signin.request_code("0151 2345 6789")  # the same number, written another way

    assert caught.value.limit == "resend-cooldown"
    assert caught.value.retry_after is not None and 1 <= caught.value.retry_after <= 60
    assert [message["to"] for message in outbox_lines(outbox)] == [USER_PHONE]


async def test_once_the_hourly_requests_are_spent_the_phone_stays_refused_from_any_address(
    make_signin: SignInFactory,
    make_throttle: Callable[..., SignInThrottle],
    outbox: Path,
    client_address: Callable[[str], None],
) -> None:
    signin = make_signin(throttle=make_throttle(requests_per_identity="2/hour"))
    client_address("203.0.113.7")
    await signin.request_code(USER_PHONE)
    await signin.request_code(USER_PHONE)

    for address in ("203.0.113.7", "198.51.100.9", ""):
        client_address(address)
        with pytest.raises(TooManyRequests) as caught:
            await signin.request_code(USER_PHONE)
        assert caught.value.limit == "code-requests"
        assert caught.value.retry_after is not None and caught.value.retry_after > 3500

    assert len(outbox_lines(outbox)) == 2
    await signin.request_code(OTHER_PHONE)  # another number is not affected
    assert len(outbox_lines(outbox)) == 3


async def test_many_numbers_from_one_address_are_refused_past_the_address_limit(
    make_signin: SignInFactory,
    make_throttle: Callable[..., SignInThrottle],
    outbox: Path,
    client_address: Callable[[str], None],
) -> None:
    signin = make_signin(throttle=make_throttle(requests_per_ip="2/hour"))
    client_address("203.0.113.7")
    await signin.request_code(USER_PHONE)
    await signin.request_code(OTHER_PHONE)

    with pytest.raises(TooManyRequests) as caught:
        await signin.request_code(ADMIN_PHONE)

    assert caught.value.limit == "code-requests-per-ip"
    assert [message["to"] for message in outbox_lines(outbox)] == [USER_PHONE, OTHER_PHONE]


async def test_after_the_wrong_tries_of_the_hour_even_the_right_code_is_refused(
    make_signin: SignInFactory, make_throttle: Callable[..., SignInThrottle], outbox: Path, users: UserRepository
) -> None:
    signin = make_signin(throttle=make_throttle(verifications_per_identity="3/hour"))
    await signin.request_code(USER_PHONE)
    code = last_code(outbox)
    for _ in range(3):
        with pytest.raises(Unauthenticated) as wrong_try:
            await signin.verify_code(USER_PHONE, wrong(code))
        assert wrong_try.value.reason == "invalid-code"

    with pytest.raises(TooManyRequests) as caught:
        await signin.verify_code(USER_PHONE, code)

    assert caught.value.limit == "code-verifications"
    assert await users.by_phone(USER_PHONE) is None


# --- which numbers get codes ----------------------------------------------------------


@pytest.mark.parametrize(
    "policy",
    [
        pytest.param(PhonePolicy("DE", allowed_regions={"DE"}), id="only-germany-allowed"),
        pytest.param(PhonePolicy("DE", denied_regions={"fr"}), id="france-denied"),
    ],
)
async def test_a_number_from_a_region_not_served_gets_no_code(
    make_signin: SignInFactory, outbox: Path, policy: PhonePolicy
) -> None:
    signin = make_signin(phone_policy=policy)

    with pytest.raises(InvalidArgument) as caught:
        await signin.request_code(FRENCH_MOBILE)
    assert caught.value.reason == "phone-region-not-allowed"
    with pytest.raises(InvalidArgument) as on_verify:
        await signin.verify_code(FRENCH_MOBILE, "123456")
    assert on_verify.value.reason == "phone-region-not-allowed"

    assert outbox_lines(outbox) == []
    assert await signin.request_code(USER_PHONE) == USER_PHONE  # a German mobile still does
    assert [message["to"] for message in outbox_lines(outbox)] == [USER_PHONE]


# --- test numbers ---------------------------------------------------------------------


async def test_a_test_number_signs_in_with_its_fixed_code_and_no_sms(
    signin: SignIn, outbox: Path, verifier: TokenVerifier
) -> None:
    assert await signin.request_code(TEST_PHONE) == TEST_PHONE
    tokens, user = await signin.verify_code(TEST_PHONE, TEST_CODE)

    assert outbox_lines(outbox) == []
    assert user.phone == TEST_PHONE
    assert (await verifier.verify(tokens.access_token)).user_id == user.id


async def test_a_test_number_refuses_any_other_code(signin: SignIn, users: UserRepository) -> None:
    await signin.request_code(TEST_PHONE)

    with pytest.raises(Unauthenticated) as caught:
        await signin.verify_code(TEST_PHONE, wrong(TEST_CODE))

    assert caught.value.reason == "invalid-code"
    assert await users.by_phone(TEST_PHONE) is None


def production_settings(**overrides: Any) -> Settings:
    options: dict[str, Any] = {
        "environment": "production",
        "otp_hmac_secret": "x" * 32,
        "pseudonym_secret": "p" * 32,
        "sms_provider": "twilio",
        "twilio_account_sid": "AC" + "0" * 32,
        "twilio_auth_token": "t" * 32,
        "twilio_messaging_service_sid": "MG" + "0" * 32,
    } | overrides
    return Settings(**options)


def test_production_settings_refuse_test_numbers() -> None:
    production_settings()  # everything else about these settings is acceptable

    with pytest.raises(ValidationError) as caught:
        production_settings(test_phone_codes=f"{TEST_PHONE}={TEST_CODE}")

    assert "TEST_PHONE_CODES must be empty when ENVIRONMENT=production" in str(caught.value)


def test_test_number_codes_must_be_six_digits() -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(test_phone_codes=f"{TEST_PHONE}=12345")

    assert "TEST_PHONE_CODES" in str(caught.value)
    assert Settings(test_phone_codes=f" {TEST_PHONE} = {TEST_CODE} ").test_codes() == {TEST_PHONE: TEST_CODE}


# --- answers that do not reveal accounts ----------------------------------------------


async def test_new_and_existing_numbers_get_the_same_answer_and_one_sms_each(
    signin: SignIn, outbox: Path, users: UserRepository
) -> None:
    await users.sign_in(OTHER_PHONE, promote_to_admin=False)

    for_new = await signin.request_code(USER_PHONE)
    for_existing = await signin.request_code(OTHER_PHONE)

    assert (for_new, for_existing) == (USER_PHONE, OTHER_PHONE)  # the number, normalised; nothing more
    assert [message["to"] for message in outbox_lines(outbox)] == [USER_PHONE, OTHER_PHONE]
    assert await users.by_phone(USER_PHONE) is None  # asking for a code creates no account


async def test_a_banned_user_gets_the_same_answer_but_no_sms(
    signin: SignIn, outbox: Path, users: UserRepository
) -> None:
    user = await users.sign_in(USER_PHONE, promote_to_admin=False)
    await signin.set_banned(user.id, True)

    assert await signin.request_code("0151 23456789") == USER_PHONE

    assert outbox_lines(outbox) == []


# --- sessions that end at once --------------------------------------------------------


async def test_logout_refuses_that_sessions_access_token_at_once_but_not_another_sessions(
    signin: SignIn, outbox: Path, verifier: TokenVerifier, redis: Redis, unique_name: str
) -> None:
    ended, _ = await sign_in(signin, outbox, USER_PHONE)
    kept, _ = await sign_in(signin, outbox, USER_PHONE)
    session_id = (await verifier.verify(ended.access_token)).session_id

    await signin.logout(session_id)

    await assert_session_revoked(verifier, ended.access_token)
    assert (await verifier.verify(kept.access_token)).session_id != session_id
    # The deny-list entry outlives the session's last access token, and no longer.
    ttl = await redis.ttl(f"{unique_name}:revoked-session:{session_id}")
    assert ACCESS_TTL < ttl <= ACCESS_TTL + 60


async def test_reusing_a_rotated_refresh_token_ends_the_session_at_once(
    signin: SignIn, outbox: Path, verifier: TokenVerifier
) -> None:
    tokens, _ = await sign_in(signin, outbox, USER_PHONE)
    other, _ = await sign_in(signin, outbox, USER_PHONE)
    rotated = await signin.refresh(tokens.refresh_token)
    assert (await verifier.verify(rotated.access_token)).session_id == (
        await verifier.verify(tokens.access_token)
    ).session_id

    with pytest.raises(Unauthenticated) as caught:
        await signin.refresh(tokens.refresh_token)  # the spent one, as a thief would

    assert caught.value.reason == "invalid-refresh-token"
    await assert_session_revoked(verifier, tokens.access_token)
    await assert_session_revoked(verifier, rotated.access_token)
    with pytest.raises(Unauthenticated):
        await signin.refresh(rotated.refresh_token)  # the legitimate holder is out too
    await verifier.verify(other.access_token)  # another session is untouched


async def test_a_ban_ends_every_session_of_the_user_and_refuses_their_codes(
    signin: SignIn, outbox: Path, verifier: TokenVerifier, users: UserRepository
) -> None:
    first, user = await sign_in(signin, outbox, USER_PHONE)
    second, _ = await sign_in(signin, outbox, USER_PHONE)
    bystander, _ = await sign_in(signin, outbox, OTHER_PHONE)
    await signin.request_code(USER_PHONE)
    code_sent_before_the_ban = last_code(outbox)

    banned = await signin.set_banned(user.id, True)

    assert banned.banned
    await assert_session_revoked(verifier, first.access_token)
    await assert_session_revoked(verifier, second.access_token)
    # The sessions are over, and their holder is told why (as the README says).
    with pytest.raises(PermissionDenied) as refresh:
        await signin.refresh(first.refresh_token)
    assert refresh.value.reason == "account-suspended"
    with pytest.raises(Unauthenticated) as verify:
        await signin.verify_code(USER_PHONE, code_sent_before_the_ban)
    assert verify.value.reason == "invalid-code"
    await verifier.verify(bystander.access_token)


async def test_a_refresh_by_a_banned_user_whose_session_survived_is_refused_as_suspended(
    signin: SignIn, outbox: Path, verifier: TokenVerifier, users: UserRepository
) -> None:
    tokens, user = await sign_in(signin, outbox, USER_PHONE)
    await users.set_banned(user.id, True)  # the flag alone, as if the session sweep had not run

    with pytest.raises(PermissionDenied) as caught:
        await signin.refresh(tokens.refresh_token)

    assert caught.value.reason == "account-suspended"
    await assert_session_revoked(verifier, tokens.access_token)


async def test_after_an_unban_the_sessions_the_ban_ended_stay_ended(
    signin: SignIn, outbox: Path, users: UserRepository
) -> None:
    tokens, user = await sign_in(signin, outbox, USER_PHONE)
    await signin.set_banned(user.id, True)
    await signin.set_banned(user.id, False)

    with pytest.raises(Unauthenticated) as refresh:
        await signin.refresh(tokens.refresh_token)
    assert refresh.value.reason == "invalid-refresh-token"
    with pytest.raises(Unauthenticated):
        await signin.refresh("a-refresh-token-nobody-was-given")


async def test_an_unbanned_user_can_sign_in_again(
    signin: SignIn, outbox: Path, verifier: TokenVerifier, users: UserRepository
) -> None:
    _, user = await sign_in(signin, outbox, USER_PHONE)
    await signin.set_banned(user.id, True)
    await signin.request_code(USER_PHONE)
    assert len(outbox_lines(outbox)) == 1  # withheld while banned

    assert not (await signin.set_banned(user.id, False)).banned
    tokens, again = await sign_in(signin, outbox, USER_PHONE)

    assert again.id == user.id
    assert (await verifier.verify(tokens.access_token)).user_id == user.id
    assert len(outbox_lines(outbox)) == 2


# --- roles ----------------------------------------------------------------------------


async def test_a_role_change_is_recorded_and_ends_the_users_sessions(
    signin: SignIn, outbox: Path, verifier: TokenVerifier, users: UserRepository
) -> None:
    tokens, user = await sign_in(signin, outbox, USER_PHONE)

    promoted = await signin.set_role(user.id, "admin", actor="admin-7", via="admin-api")

    assert promoted.role == "admin"
    (change,) = await users.role_changes(user.id)
    assert {key: change[key] for key in ("from", "to", "actor", "via")} == {
        "from": "user",
        "to": "admin",
        "actor": "admin-7",
        "via": "admin-api",
    }
    assert change["at_ms"] > 0
    await assert_session_revoked(verifier, tokens.access_token)
    fresh, _ = await sign_in(signin, outbox, USER_PHONE)
    assert (await verifier.verify(fresh.access_token)).role == "admin"


async def test_setting_the_role_a_user_already_has_records_nothing(signin: SignIn, users: UserRepository) -> None:
    user = await users.sign_in(USER_PHONE, promote_to_admin=False)

    await signin.set_role(user.id, "user", actor="admin-7", via="admin-api")

    assert await users.role_changes(user.id) == []


async def test_promotion_by_admin_phones_at_sign_in_is_recorded_once(
    signin: SignIn, outbox: Path, users: UserRepository
) -> None:
    _, admin = await sign_in(signin, outbox, ADMIN_PHONE)
    await sign_in(signin, outbox, ADMIN_PHONE)

    assert admin.role == "admin"
    (change,) = await users.role_changes(admin.id)
    assert {key: change[key] for key in ("from", "to", "actor", "via")} == {
        "from": "user",
        "to": "admin",
        "actor": "ADMIN_PHONES",
        "via": "sign-in",
    }


# --- without Redis --------------------------------------------------------------------


async def test_revocations_that_cannot_be_read_refuse_every_token(
    unreachable_redis: Redis, unique_name: str, key_ring: KeyRing, signin: SignIn, outbox: Path
) -> None:
    revocations = SessionRevocations(unreachable_redis, unique_name)
    tokens, _ = await sign_in(signin, outbox, USER_PHONE)

    async def fetch() -> str:
        return key_ring.jwks_json()

    verifier = TokenVerifier(JwksCache(fetch, 300), ISSUER, AUDIENCE, 0, revocations=revocations)

    with pytest.raises(Unavailable) as direct:
        await revocations.is_revoked("any-session")
    assert direct.value.reason == "session-store-unavailable"
    with pytest.raises(Unavailable) as through_verifier:
        await verifier.verify(tokens.access_token)
    assert through_verifier.value.reason == "session-store-unavailable"
