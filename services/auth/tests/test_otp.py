"""One-time codes on a real Redis: a code works exactly once, dies after too many wrong
tries or when it expires, is replaced by a newer one, and is never stored in the clear."""

from __future__ import annotations

import asyncio
import hashlib

import pytest
from redis.asyncio import Redis

from auth_service.otp import OtpStore, Verification

PHONE = "+4915123456789"
OTHER_PHONE = "+33612345678"
MAX_ATTEMPTS = 3


@pytest.fixture
def otp(redis: Redis, unique_name: str) -> OtpStore:
    return OtpStore(redis, b"test-otp-secret", ttl_seconds=60, max_attempts=MAX_ATTEMPTS, prefix=unique_name)


def wrong(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


async def test_issued_code_is_six_digits_and_verifies(otp: OtpStore) -> None:
    code = await otp.issue(PHONE)

    assert len(code) == 6 and code.isdigit()
    assert await otp.verify(PHONE, code) is Verification.OK


async def test_used_code_cannot_be_replayed(otp: OtpStore, redis: Redis, unique_name: str) -> None:
    code = await otp.issue(PHONE)
    assert await otp.verify(PHONE, code) is Verification.OK

    assert await otp.verify(PHONE, code) is Verification.MISSING
    assert await redis.exists(f"{unique_name}:{PHONE}") == 0


async def test_wrong_code_is_refused_and_counted(otp: OtpStore, redis: Redis, unique_name: str) -> None:
    code = await otp.issue(PHONE)

    assert await otp.verify(PHONE, wrong(code)) is Verification.WRONG
    assert await redis.hget(f"{unique_name}:{PHONE}", "wrong") == b"1"
    assert await otp.verify(PHONE, wrong(wrong(code))) is Verification.WRONG
    assert await redis.hget(f"{unique_name}:{PHONE}", "wrong") == b"2"


async def test_right_code_still_works_after_fewer_wrong_tries_than_the_limit(otp: OtpStore) -> None:
    code = await otp.issue(PHONE)
    for _ in range(MAX_ATTEMPTS - 1):
        assert await otp.verify(PHONE, wrong(code)) is Verification.WRONG

    assert await otp.verify(PHONE, code) is Verification.OK


async def test_code_dies_after_max_attempts_wrong_tries_even_for_the_right_code(
    otp: OtpStore, redis: Redis, unique_name: str
) -> None:
    code = await otp.issue(PHONE)
    for _ in range(MAX_ATTEMPTS):
        assert await otp.verify(PHONE, wrong(code)) is Verification.WRONG

    assert await redis.exists(f"{unique_name}:{PHONE}") == 0
    assert await otp.verify(PHONE, code) is Verification.MISSING


async def test_new_code_replaces_the_old_one(otp: OtpStore) -> None:
    first = await otp.issue(PHONE)
    second = await otp.issue(PHONE)
    while second == first:  # one chance in a million
        second = await otp.issue(PHONE)

    assert await otp.verify(PHONE, first) is Verification.WRONG
    assert await otp.verify(PHONE, second) is Verification.OK


async def test_new_code_starts_with_a_fresh_count_of_wrong_tries(otp: OtpStore) -> None:
    first = await otp.issue(PHONE)
    for _ in range(MAX_ATTEMPTS - 1):
        await otp.verify(PHONE, wrong(first))

    second = await otp.issue(PHONE)
    for _ in range(MAX_ATTEMPTS - 1):
        assert await otp.verify(PHONE, wrong(second)) is Verification.WRONG

    assert await otp.verify(PHONE, second) is Verification.OK


async def test_codes_of_different_phones_are_independent(otp: OtpStore) -> None:
    mine = await otp.issue(PHONE)
    theirs = await otp.issue(OTHER_PHONE)

    # A code is bound to its phone: mine does not open theirs (unless they happen to be equal).
    if mine != theirs:
        assert await otp.verify(OTHER_PHONE, mine) is Verification.WRONG
    assert await otp.verify(PHONE, mine) is Verification.OK
    assert await otp.verify(OTHER_PHONE, theirs) is Verification.OK


async def test_code_of_a_phone_with_no_code_is_missing(otp: OtpStore) -> None:
    assert await otp.verify(PHONE, "123456") is Verification.MISSING


async def test_code_carries_its_time_to_live_in_redis(otp: OtpStore, redis: Redis, unique_name: str) -> None:
    await otp.issue(PHONE)

    ttl = await redis.ttl(f"{unique_name}:{PHONE}")
    assert 55 <= ttl <= 60


async def test_code_expires(redis: Redis, unique_name: str) -> None:
    otp = OtpStore(redis, b"test-otp-secret", ttl_seconds=1, max_attempts=MAX_ATTEMPTS, prefix=unique_name)
    code = await otp.issue(PHONE)

    await asyncio.sleep(1.5)

    assert await otp.verify(PHONE, code) is Verification.MISSING


async def test_discarded_code_no_longer_verifies(otp: OtpStore) -> None:
    code = await otp.issue(PHONE)

    await otp.discard(PHONE)

    assert await otp.verify(PHONE, code) is Verification.MISSING


async def test_concurrent_verifications_of_one_code_succeed_exactly_once(otp: OtpStore) -> None:
    for _ in range(5):  # a few rounds, so a race that only sometimes loses is still caught
        code = await otp.issue(PHONE)

        results = await asyncio.gather(*(otp.verify(PHONE, code) for _ in range(2)))

        assert sorted(result.value for result in results) == ["missing", "ok"]


async def test_many_concurrent_verifications_of_one_code_succeed_exactly_once(otp: OtpStore) -> None:
    code = await otp.issue(PHONE)

    results = await asyncio.gather(*(otp.verify(PHONE, code) for _ in range(20)))

    assert results.count(Verification.OK) == 1
    assert results.count(Verification.MISSING) == 19


async def test_redis_never_holds_the_plain_code(otp: OtpStore, redis: Redis, unique_name: str) -> None:
    code = await otp.issue(PHONE)

    keys = [key async for key in redis.scan_iter(match=f"{unique_name}:*")]
    assert keys == [f"{unique_name}:{PHONE}".encode()]
    stored = await redis.hgetall(keys[0])
    assert set(stored) == {b"digest", b"wrong"}
    for value in stored.values():
        assert code.encode() not in value
    # Nor an unkeyed hash of it, which six digits would make trivial to reverse.
    digest = stored[b"digest"].decode()
    assert digest not in {
        hashlib.sha256(code.encode()).hexdigest(),
        hashlib.sha256(f"{PHONE}:{code}".encode()).hexdigest(),
    }
    assert len(digest) == 64


async def test_a_store_with_another_secret_cannot_verify_the_code(redis: Redis, unique_name: str) -> None:
    issuer = OtpStore(redis, b"secret-one", ttl_seconds=60, max_attempts=MAX_ATTEMPTS, prefix=unique_name)
    other = OtpStore(redis, b"secret-two", ttl_seconds=60, max_attempts=MAX_ATTEMPTS, prefix=unique_name)
    code = await issuer.issue(PHONE)

    assert await other.verify(PHONE, code) is Verification.WRONG
    assert await issuer.verify(PHONE, code) is Verification.OK
