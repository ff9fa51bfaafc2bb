"""Rate limits through the real FastAPI app and the machine's real Redis: the per-client-IP
limit on every route (fails open without Redis), the per-user upload quota (fails closed),
and which address X-Forwarded-For may name. Every service is pointed at a port where
nothing listens; tokens are signed with a key made here and verified against its JWKS."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI
from jwt.algorithms import RSAAlgorithm

from facerestore_common.model_registry import ModelOffer
from facerestore_common.revocation import SessionRevocations
from facerestore_common.tokens import JwksCache, TokenVerifier
from gateway_service import problems
from gateway_service.app import create_app
from gateway_service.problems import Problem
from gateway_service.rate_limits import Limit, RateLimiter
from gateway_service.settings import Settings

PROBLEM_TYPE = "application/problem+json"
KID = "rate-limit-test-key"
UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"
RATE_LIMIT_HEADERS = ("ratelimit-limit", "ratelimit-remaining", "ratelimit-reset", "ratelimit-policy")
PHOTO = ("face.jpg", b"\xff\xd8\xff\xe0" + b"\0" * 64, "image/jpeg")
CLASSICAL = ModelOffer("classical", "classical-opencv-v2", "2", "", False, None, 2)


SettingsFactory = Callable[..., Settings]
# Every test leaves no Redis keys behind (conftest.py).
pytestmark = pytest.mark.usefixtures("forget_keys")


def jwks_of(key: rsa.RSAPrivateKey) -> str:
    jwk: dict[str, Any] = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return json.dumps({"keys": [{**jwk, "kid": KID, "use": "sig", "alg": "RS256"}]})


def mint(key: rsa.RSAPrivateKey, settings: Settings, user_id: str) -> str:
    now = int(time.time())
    claims = {
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "sub": user_id,
        "role": "user",
        "sid": uuid.uuid4().hex,
        "jti": uuid.uuid4().hex,
        "iat": now,
        "exp": now + 600,
    }
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": KID})


def use_local_keys(app: FastAPI, settings: Settings, key: rsa.RSAPrivateKey, *, session_store: bool = True) -> None:
    """Verify tokens against `key`'s JWKS instead of asking the (absent) auth service. With
    `session_store`, ended sessions are checked in Redis exactly as the app's own verifier does."""
    document = jwks_of(key)

    async def fetch() -> str:
        return document

    app.state.verifier = TokenVerifier(
        JwksCache(fetch, settings.jwks_cache_seconds),
        settings.jwt_issuer,
        settings.jwt_audience,
        settings.jwt_leeway_seconds,
        revocations=SessionRevocations(app.state.redis, settings.redis_key_prefix) if session_store else None,
    )


@asynccontextmanager
async def running(
    settings: Settings, peer: tuple[str, int] = ("127.0.0.1", 123)
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=peer)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as http:
            yield app, http


def assert_problem(response: httpx.Response, status: int, reason: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_TYPE
    body: dict[str, Any] = response.json()
    assert body["type"] == problems.PROBLEM_BASE + reason
    assert body["type"].endswith("/" + reason)
    assert body["status"] == status
    return body


def remaining(response: httpx.Response) -> int:
    return int(response.headers["ratelimit-remaining"])


# --- the per-client-IP limit -----------------------------------------------------------------


async def test_every_request_is_counted_per_ip_and_the_fourth_of_three_a_minute_is_refused(
    redis_url: str, unique_name: str, make_settings: SettingsFactory
) -> None:
    async with running(make_settings(redis_url, unique_name, rate_limit_per_ip="3/minute")) as (_, http):
        allowed = [await http.get("/v1/me") for _ in range(3)]
        refused = await http.get("/v1/me")

    for response in allowed:
        assert_problem(response, 401, "unauthenticated")
        assert response.headers["ratelimit-limit"] == "3"
        assert response.headers["ratelimit-policy"] == "3;w=60"
        assert 0 <= int(response.headers["ratelimit-reset"]) <= 60
    assert [remaining(response) for response in allowed] == [2, 1, 0]

    body = assert_problem(refused, 429, "rate-limited")
    assert body["limit"] == "requests-per-ip"
    retry_after = int(refused.headers["retry-after"])
    assert 1 <= retry_after <= 60
    assert body["retry_after"] == retry_after
    assert refused.headers["ratelimit-limit"] == "3"
    assert refused.headers["ratelimit-remaining"] == "0"
    assert body["request_id"] == refused.headers["x-request-id"]


async def test_probes_are_never_limited_nor_counted(
    redis_url: str, unique_name: str, make_settings: SettingsFactory
) -> None:
    async with running(make_settings(redis_url, unique_name, rate_limit_per_ip="3/minute")) as (_, http):
        probes_before = [await http.get(path) for path in ("/healthz", "/readyz") * 3]
        counted = [await http.get("/v1/me") for _ in range(4)]
        probes_after = [await http.get(path) for path in ("/healthz", "/readyz") * 3]

    # Six probes first did not spend any of the three requests.
    assert [remaining(response) for response in counted[:3]] == [2, 1, 0]
    assert counted[3].status_code == 429
    for response in probes_before + probes_after:
        # The services are down but Redis answers, so /readyz says ready too, and never 429.
        assert response.status_code == 200, response.text
        assert not any(header in response.headers for header in RATE_LIMIT_HEADERS)


async def test_spoofed_forwarded_for_from_an_untrusted_peer_is_ignored(
    redis_url: str, unique_name: str, make_settings: SettingsFactory
) -> None:
    settings = make_settings(redis_url, unique_name, rate_limit_per_ip="3/minute", trusted_proxies="")
    async with running(settings, peer=("203.0.113.7", 1234)) as (_, http):
        responses = [await http.get("/v1/me", headers={"X-Forwarded-For": f"198.51.100.{n}"}) for n in range(1, 5)]

    assert [response.status_code for response in responses] == [401, 401, 401, 429]
    assert [remaining(response) for response in responses[:3]] == [2, 1, 0]
    assert responses[3].json()["limit"] == "requests-per-ip"


async def test_behind_a_trusted_proxy_each_forwarded_client_has_its_own_bucket(
    redis_url: str, unique_name: str, make_settings: SettingsFactory
) -> None:
    settings = make_settings(redis_url, unique_name, rate_limit_per_ip="3/minute", trusted_proxies="203.0.113.7/32")
    async with running(settings, peer=("203.0.113.7", 1234)) as (_, http):
        responses = [await http.get("/v1/me", headers={"X-Forwarded-For": f"198.51.100.{n}"}) for n in range(1, 5)]
        repeat = await http.get("/v1/me", headers={"X-Forwarded-For": "198.51.100.1"})

    assert [response.status_code for response in responses] == [401] * 4
    assert [remaining(response) for response in responses] == [2] * 4
    # The same forwarded client again: its own bucket, one more spent.
    assert remaining(repeat) == 1


async def test_a_client_behind_the_proxy_is_counted_under_its_real_address_not_its_own_forwarded_for(
    redis_url: str, unique_name: str, make_settings: SettingsFactory
) -> None:
    settings = make_settings(redis_url, unique_name, rate_limit_per_ip="3/minute", trusted_proxies="203.0.113.7/32")
    real = "198.51.100.9"
    async with running(settings, peer=("203.0.113.7", 1234)) as (_, http):
        # The client sent "X-Forwarded-For: <fake>"; the proxy appended the address it saw.
        spoofed = [
            await http.get("/v1/me", headers={"X-Forwarded-For": f"{fake}, {real}"})
            for fake in ("1.2.3.4", "5.6.7.8", "9.10.11.12", "1.2.3.4")
        ]
        plain = await http.get("/v1/me", headers={"X-Forwarded-For": real})
        fake_itself = await http.get("/v1/me", headers={"X-Forwarded-For": "1.2.3.4"})

    assert [response.status_code for response in spoofed] == [401, 401, 401, 429]
    assert [remaining(response) for response in spoofed[:3]] == [2, 1, 0]
    # The real address's bucket is the one that was spent ...
    assert plain.status_code == 429
    # ... and the fake address was never charged.
    assert fake_itself.status_code == 401
    assert remaining(fake_itself) == 2


# --- without Redis ---------------------------------------------------------------------------


async def test_without_redis_the_per_ip_limit_fails_open(
    redis_url: str, unique_name: str, make_settings: SettingsFactory
) -> None:
    settings = make_settings(UNREACHABLE_REDIS, unique_name, rate_limit_per_ip="1/minute")
    async with running(settings) as (_, http):
        responses = [await http.get("/v1/me") for _ in range(3)]

    for response in responses:
        assert_problem(response, 401, "unauthenticated")
        # Nothing was counted, so nothing is announced.
        assert not any(header in response.headers for header in RATE_LIMIT_HEADERS)


async def test_without_redis_an_upload_is_refused_by_the_session_check_before_the_quota(
    redis_url: str, unique_name: str, signing_key: rsa.RSAPrivateKey, make_settings: SettingsFactory
) -> None:
    """The token is verified (ended sessions are read from Redis, failing closed) before the
    upload quota is counted, so with Redis down the session check is what answers."""
    settings = make_settings(UNREACHABLE_REDIS, unique_name)
    async with running(settings) as (app, http):
        use_local_keys(app, settings, signing_key)
        token = mint(signing_key, settings, "user-without-redis")
        upload = await http.post("/v1/images", files={"file": PHOTO}, headers={"Authorization": f"Bearer {token}"})
        me = await http.get("/v1/me", headers={"Authorization": f"Bearer {token}"})

    assert_problem(upload, 503, "session-store-unavailable")
    assert_problem(me, 503, "session-store-unavailable")


async def test_without_redis_the_apps_upload_quota_fails_closed(
    redis_url: str, unique_name: str, signing_key: rsa.RSAPrivateKey, make_settings: SettingsFactory
) -> None:
    """The quota as the app wires it, reached with a verifier that keeps no session store."""
    settings = make_settings(UNREACHABLE_REDIS, unique_name)
    async with running(settings) as (app, http):
        use_local_keys(app, settings, signing_key, session_store=False)
        token = mint(signing_key, settings, "user-without-redis")
        upload = await http.post("/v1/images", files={"file": PHOTO}, headers={"Authorization": f"Bearer {token}"})
        me = await http.get("/v1/me", headers={"Authorization": f"Bearer {token}"})

    assert_problem(upload, 503, "rate-limit-unavailable")
    # The same caller's other requests go on (to the auth service, which is down here).
    assert_problem(me, 503, "service-unavailable")


async def test_rate_limiter_without_redis_refuses_fail_closed_limits_and_passes_fail_open_ones(
    unique_name: str,
) -> None:
    limiter = RateLimiter(UNREACHABLE_REDIS, f"{unique_name}:gateway-limits")

    with pytest.raises(Problem) as refused:
        await limiter.hit(Limit.of("uploads-per-user", "10/hour", fail_open=False), "user-1")
    assert refused.value.status == 503
    assert refused.value.reason == "rate-limit-unavailable"
    assert "redis" not in refused.value.detail.lower()

    assert await limiter.hit(Limit.of("requests-per-ip", "1/minute", fail_open=True), "10.0.0.1") is None
    assert await limiter.hit(Limit.of("requests-per-ip", "1/minute", fail_open=True), "10.0.0.1") is None


async def test_rate_limiter_with_redis_counts_down_then_refuses(redis_url: str, unique_name: str) -> None:
    limiter = RateLimiter(redis_url, f"{unique_name}:gateway-limits")
    limit = Limit.of("uploads-per-user", "2/hour", fail_open=False)

    first = await limiter.hit(limit, "user-1")
    second = await limiter.hit(limit, "user-1")
    with pytest.raises(Problem) as refused:
        await limiter.hit(limit, "user-1")

    assert first is not None and second is not None
    assert (first.remaining, second.remaining) == (1, 0)
    assert refused.value.status == 429
    assert refused.value.extra["limit"] == "uploads-per-user"
    assert 3590 <= int(refused.value.headers["Retry-After"]) <= 3600


async def test_a_hit_taken_back_is_no_longer_counted(redis_url: str, unique_name: str) -> None:
    limiter = RateLimiter(redis_url, f"{unique_name}:gateway-limits")
    limit = Limit.of("uploads-per-user", "2/hour", fail_open=False)

    first = await limiter.hit(limit, "user-1")
    second = await limiter.hit(limit, "user-1")
    assert first is not None and second is not None
    restored = await limiter.take_back(second)
    third = await limiter.hit(limit, "user-1")
    with pytest.raises(Problem):
        await limiter.hit(limit, "user-1")
    await limiter.aclose()

    assert (first.remaining, second.remaining, restored.remaining) == (1, 0, 1)
    assert third is not None and third.remaining == 0


# --- the per-user upload quota ---------------------------------------------------------------


async def test_an_upload_past_the_quota_is_refused_and_other_users_are_not_affected(
    redis_url: str, unique_name: str, signing_key: rsa.RSAPrivateKey, make_settings: SettingsFactory
) -> None:
    settings = make_settings(redis_url, unique_name, rate_limit_uploads_per_user="2/hour")
    async with running(settings) as (app, http):
        use_local_keys(app, settings, signing_key)
        # A worker serves a model, so uploads go on to the upload service.
        await app.state.models.announce("cpu-worker", [CLASSICAL])
        # Anna's two accepted uploads of this hour, counted as the upload route counts them.
        for _ in range(2):
            await app.state.rate_limiter.hit(app.state.upload_limit, "anna")
        anna = {"Authorization": f"Bearer {mint(signing_key, settings, 'anna')}"}
        ben = {"Authorization": f"Bearer {mint(signing_key, settings, 'ben')}"}
        refused = await http.post("/v1/images", files={"file": PHOTO}, headers=anna)
        other_user = await http.post("/v1/images", files={"file": PHOTO}, headers=ben)
        # Another of Anna's sessions shares her quota.
        anna_again = {"Authorization": f"Bearer {mint(signing_key, settings, 'anna')}"}
        refused_again = await http.post("/v1/images", files={"file": PHOTO}, headers=anna_again)

    body = assert_problem(refused, 429, "rate-limited")
    assert body["limit"] == "uploads-per-user"
    retry_after = int(refused.headers["retry-after"])
    assert 3590 <= retry_after <= 3600
    assert body["retry_after"] == retry_after
    # The refusal announces the quota, not the (looser) per-IP limit.
    assert refused.headers["ratelimit-limit"] == "2"
    assert refused.headers["ratelimit-remaining"] == "0"
    assert refused.headers["ratelimit-policy"] == "2;w=3600"
    # Past the quota, the upload service is reached; it is down here.
    assert_problem(other_user, 503, "service-unavailable")
    assert_problem(refused_again, 429, "rate-limited")


async def test_uploads_that_fail_spend_none_of_the_quota(
    redis_url: str, unique_name: str, signing_key: rsa.RSAPrivateKey, make_settings: SettingsFactory
) -> None:
    settings = make_settings(redis_url, unique_name, rate_limit_uploads_per_user="2/hour")
    async with running(settings) as (app, http):
        use_local_keys(app, settings, signing_key)
        # A worker serves a model, so uploads go on to the upload service.
        await app.state.models.announce("cpu-worker", [CLASSICAL])
        anna = {"Authorization": f"Bearer {mint(signing_key, settings, 'anna')}"}
        failed = [await http.post("/v1/images", files={"file": PHOTO}, headers=anna) for _ in range(4)]

    # The upload service is down: every upload fails, none is counted, and each answer says so.
    for response in failed:
        assert_problem(response, 503, "service-unavailable")
        assert response.headers["ratelimit-limit"] == "2"
        assert response.headers["ratelimit-remaining"] == "2"


async def test_an_upload_whose_deadline_passes_stays_counted(
    redis_url: str, unique_name: str, signing_key: rsa.RSAPrivateKey, make_settings: SettingsFactory
) -> None:
    """The upload service finishes an upload whose caller stopped waiting, so it is counted: else a
    client that gives up early would upload past its quota."""
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # connected, never answered: an upload service that is busy

    stalled = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = stalled.sockets[0].getsockname()[1]
    settings = make_settings(
        redis_url,
        unique_name,
        rate_limit_uploads_per_user="2/hour",
        upload_grpc_target=f"127.0.0.1:{port}",
        upload_deadline_seconds=0.5,
    )
    try:
        async with running(settings) as (app, http):
            use_local_keys(app, settings, signing_key)
            # A worker serves a model, so uploads go on to the upload service.
            await app.state.models.announce("cpu-worker", [CLASSICAL])
            anna = {"Authorization": f"Bearer {mint(signing_key, settings, 'anna')}"}
            timed_out = await http.post("/v1/images", files={"file": PHOTO}, headers=anna)
    finally:
        for writer in held:
            writer.close()
        stalled.close()
        await stalled.wait_closed()

    assert_problem(timed_out, 503, "service-unavailable")
    assert timed_out.headers["ratelimit-remaining"] == "1"
