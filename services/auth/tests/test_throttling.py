"""Sign-in limits counted in a real Redis: a resend cooldown, hourly requests per identity
and per client address, hourly verifications; refusals carry when to retry and which
limit refused, count nothing, survive a restart, and without Redis every attempt is
refused (fail closed)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from auth_service.throttling import SignInThrottle
from facerestore_common.errors import TooManyRequests, Unavailable

PHONE = "phone:+4915123456789"
OTHER_PHONE = "phone:+4915198765432"
IP = "203.0.113.7"
OTHER_IP = "198.51.100.9"
UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"

ThrottleFactory = Callable[..., SignInThrottle]


@pytest.fixture
def make_throttle(redis_url: str, unique_name: str) -> ThrottleFactory:
    """Throttles whose keys start with `unique_name:` (as the service's start with its
    REDIS_KEY_PREFIX), so the `redis` fixture removes them after the test."""

    def make(**overrides: Any) -> SignInThrottle:
        options: dict[str, Any] = {
            "redis_url": redis_url,
            "prefix": f"{unique_name}:auth",
            "requests_per_identity": "100/hour",
            "requests_per_ip": "100/hour",
            "verifications_per_identity": "100/hour",
            "resend_cooldown_seconds": 0,
        } | overrides
        return SignInThrottle(**options)

    return make


async def refused(attempt: Any, limit: str) -> TooManyRequests:
    with pytest.raises(TooManyRequests) as caught:
        await attempt
    assert caught.value.reason == "rate-limited"
    assert caught.value.limit == limit
    assert caught.value.retry_after is not None
    return caught.value


# --- the resend cooldown --------------------------------------------------------------


async def test_a_second_request_within_the_cooldown_is_refused_with_when_to_retry(
    make_throttle: ThrottleFactory, redis: Redis
) -> None:
    throttle = make_throttle(resend_cooldown_seconds=30)
    await throttle.code_request(PHONE, IP)

    error = await refused(throttle.code_request(PHONE, IP), "resend-cooldown")

    assert error.retry_after is not None and 29 <= error.retry_after <= 30
    assert "try again in" in error.detail


async def test_the_cooldown_is_per_identity(make_throttle: ThrottleFactory, redis: Redis) -> None:
    throttle = make_throttle(resend_cooldown_seconds=30)
    await throttle.code_request(PHONE, IP)

    await throttle.code_request(OTHER_PHONE, IP)  # not refused


async def test_a_request_after_the_cooldown_is_allowed(make_throttle: ThrottleFactory, redis: Redis) -> None:
    throttle = make_throttle(resend_cooldown_seconds=1)
    await throttle.code_request(PHONE, IP)
    error = await refused(throttle.code_request(PHONE, IP), "resend-cooldown")
    assert error.retry_after == 1

    await asyncio.sleep(1.1)

    await throttle.code_request(PHONE, IP)
    await refused(throttle.code_request(PHONE, IP), "resend-cooldown")


# --- hourly limits --------------------------------------------------------------------


async def test_hourly_requests_per_identity_refuse_the_one_over_the_limit(
    make_throttle: ThrottleFactory, redis: Redis
) -> None:
    throttle = make_throttle(requests_per_identity="3/hour")
    for _ in range(3):
        await throttle.code_request(PHONE, IP)

    error = await refused(throttle.code_request(PHONE, IP), "code-requests")

    assert error.retry_after is not None and 3590 <= error.retry_after <= 3600
    # Another number is counted on its own.
    await throttle.code_request(OTHER_PHONE, IP)


async def test_requests_from_one_address_are_limited_across_identities(
    make_throttle: ThrottleFactory, redis: Redis
) -> None:
    throttle = make_throttle(requests_per_ip="2/hour")
    await throttle.code_request("phone:+4915100000001", IP)
    await throttle.code_request("phone:+4915100000002", IP)

    error = await refused(throttle.code_request("phone:+4915100000003", IP), "code-requests-per-ip")

    assert error.retry_after is not None and 3590 <= error.retry_after <= 3600
    # The same number from another address passes: only the address is spent.
    await throttle.code_request("phone:+4915100000003", OTHER_IP)


async def test_without_a_client_address_only_the_identity_is_counted(
    make_throttle: ThrottleFactory, redis: Redis
) -> None:
    throttle = make_throttle(requests_per_ip="1/hour")

    for number in range(3):
        await throttle.code_request(f"phone:+491510000000{number}", "")


async def test_verifications_per_identity_are_capped(make_throttle: ThrottleFactory, redis: Redis) -> None:
    throttle = make_throttle(verifications_per_identity="4/hour")
    for _ in range(4):
        await throttle.verification(PHONE)

    error = await refused(throttle.verification(PHONE), "code-verifications")

    assert error.retry_after is not None and 3590 <= error.retry_after <= 3600
    await throttle.verification(OTHER_PHONE)
    # Verifications and code requests are separate counts.
    await throttle.code_request(PHONE, IP)


# --- a refusal counts nothing ---------------------------------------------------------


async def test_a_request_refused_by_the_address_limit_does_not_count_against_the_identity(
    make_throttle: ThrottleFactory, redis: Redis
) -> None:
    throttle = make_throttle(requests_per_identity="2/hour", requests_per_ip="1/hour")
    await throttle.code_request("phone:+4915100000001", IP)
    for _ in range(3):
        await refused(throttle.code_request(PHONE, IP), "code-requests-per-ip")

    # Had the refused attempts counted, PHONE would be over its 2/hour already.
    await throttle.code_request(PHONE, OTHER_IP)
    await throttle.code_request(PHONE, "192.0.2.1")
    await refused(throttle.code_request(PHONE, "192.0.2.2"), "code-requests")


async def test_a_request_refused_by_the_identity_limit_does_not_count_against_the_address(
    make_throttle: ThrottleFactory, redis: Redis
) -> None:
    throttle = make_throttle(requests_per_identity="1/hour", requests_per_ip="2/hour")
    await throttle.code_request(PHONE, IP)
    for _ in range(3):
        await refused(throttle.code_request(PHONE, IP), "code-requests")

    await throttle.code_request(OTHER_PHONE, IP)
    await refused(throttle.code_request("phone:+4915100000009", IP), "code-requests-per-ip")


async def test_a_request_refused_by_the_cooldown_does_not_count_against_the_hourly_limit(
    make_throttle: ThrottleFactory, redis: Redis
) -> None:
    throttle = make_throttle(requests_per_identity="2/hour", resend_cooldown_seconds=1)
    await throttle.code_request(PHONE, IP)
    for _ in range(3):
        await refused(throttle.code_request(PHONE, IP), "resend-cooldown")

    await asyncio.sleep(1.1)
    await throttle.code_request(PHONE, IP)  # the second of two, not the fifth of two


async def test_concurrent_requests_within_the_cooldown_let_only_one_through(
    make_throttle: ThrottleFactory, redis: Redis
) -> None:
    throttle = make_throttle(resend_cooldown_seconds=30)

    results = await asyncio.gather(*(throttle.code_request(PHONE, IP) for _ in range(5)), return_exceptions=True)

    assert results.count(None) == 1, results
    refusals = [result for result in results if result is not None]
    assert all(isinstance(result, TooManyRequests) for result in refusals), results
    assert {result.limit for result in refusals if isinstance(result, TooManyRequests)} == {"resend-cooldown"}


async def test_concurrent_verifications_cannot_exceed_the_cap(make_throttle: ThrottleFactory, redis: Redis) -> None:
    throttle = make_throttle(verifications_per_identity="3/hour")

    results = await asyncio.gather(*(throttle.verification(PHONE) for _ in range(12)), return_exceptions=True)

    assert results.count(None) == 3, results
    assert all(isinstance(result, TooManyRequests) for result in results if result is not None), results
    await refused(throttle.verification(PHONE), "code-verifications")


# --- where the counts live ------------------------------------------------------------


async def test_counts_are_kept_in_redis_under_the_prefix(
    make_throttle: ThrottleFactory, redis: Redis, unique_name: str
) -> None:
    await make_throttle().code_request(PHONE, IP)

    keys = sorted([key.decode() async for key in redis.scan_iter(match=f"{unique_name}:*")])
    assert len(keys) == 2
    assert all(key.startswith(f"{unique_name}:auth-limits:") for key in keys)
    assert any("code-requests/" in key and PHONE in key for key in keys)
    assert any("code-requests-per-ip/" in key and IP in key for key in keys)


async def test_counts_survive_a_restart(make_throttle: ThrottleFactory, redis: Redis) -> None:
    before = make_throttle(requests_per_identity="2/hour", verifications_per_identity="1/hour")
    await before.code_request(PHONE, IP)
    await before.code_request(PHONE, IP)
    await before.verification(PHONE)

    after = make_throttle(requests_per_identity="2/hour", verifications_per_identity="1/hour")

    await refused(after.code_request(PHONE, IP), "code-requests")
    await refused(after.verification(PHONE), "code-verifications")


async def test_another_prefix_does_not_share_the_counts(
    make_throttle: ThrottleFactory, redis: Redis, unique_name: str
) -> None:
    await make_throttle(requests_per_identity="1/hour").code_request(PHONE, IP)

    other = make_throttle(requests_per_identity="1/hour", prefix=f"{unique_name}:other")
    await other.code_request(PHONE, IP)


# --- without Redis --------------------------------------------------------------------


async def test_without_redis_code_requests_are_refused_as_unavailable(make_throttle: ThrottleFactory) -> None:
    throttle = make_throttle(redis_url=UNREACHABLE_REDIS, resend_cooldown_seconds=60)

    with pytest.raises(Unavailable) as caught:
        await throttle.code_request(PHONE, IP)

    assert caught.value.reason == "limits-unavailable"


async def test_without_redis_verifications_are_refused_as_unavailable(make_throttle: ThrottleFactory) -> None:
    throttle = make_throttle(redis_url=UNREACHABLE_REDIS)

    with pytest.raises(Unavailable) as caught:
        await throttle.verification(PHONE)

    assert caught.value.reason == "limits-unavailable"
