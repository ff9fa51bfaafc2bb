"""What the gateway's tests share: a key that signs their tokens and the tokens it signs, the app
running in-process with that key as its only signing key, settings that point every service at a
port where nothing listens, and removing the Redis keys a test made."""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI
from jwt.algorithms import RSAAlgorithm
from redis import Redis

from facerestore_common.tokens import JwksCache, TokenVerifier
from gateway_service.app import create_app
from gateway_service.sessions import PrefetchedRevocations
from gateway_service.settings import Settings

KID = "gateway-test-key"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def signing_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def running(
    signing_key: rsa.RSAPrivateKey,
) -> Callable[..., AbstractAsyncContextManager[tuple[FastAPI, httpx.AsyncClient]]]:
    """running(settings, check_sessions=False): the app through its lifespan and a client of it,
    verifying tokens against `signing_key`'s JWKS. Ended sessions are refused only with
    check_sessions (in production they always are), so that a test without Redis reaches the
    routes' own limits."""

    @asynccontextmanager
    async def run(settings: Settings, check_sessions: bool = False) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
        app = create_app(settings)
        jwk: dict[str, Any] = RSAAlgorithm.to_jwk(signing_key.public_key(), as_dict=True)
        document = json.dumps({"keys": [{**jwk, "kid": KID, "use": "sig", "alg": "RS256"}]})

        async def fetch() -> str:
            return document

        async with app.router.lifespan_context(app):
            app.state.verifier = TokenVerifier(
                JwksCache(fetch, settings.jwks_cache_seconds),
                settings.jwt_issuer,
                settings.jwt_audience,
                settings.jwt_leeway_seconds,
                revocations=PrefetchedRevocations(app.state.redis, settings.redis_key_prefix)
                if check_sessions
                else None,
            )
            transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 123))
            async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as http:
                yield app, http

    return run


@pytest.fixture
def bearer(signing_key: rsa.RSAPrivateKey) -> Callable[..., dict[str, str]]:
    """bearer(settings, user_id, role="user"): the Authorization header of a fresh access token
    (a session of its own) signed with `signing_key`."""

    def sign(settings: Settings, user_id: str, role: str = "user") -> dict[str, str]:
        now = int(time.time())
        claims = {
            "iss": settings.jwt_issuer,
            "aud": settings.jwt_audience,
            "sub": user_id,
            "role": role,
            "sid": uuid.uuid4().hex,
            "jti": uuid.uuid4().hex,
            "iat": now,
            "exp": now + 600,
        }
        token = jwt.encode(claims, signing_key, algorithm="RS256", headers={"kid": KID})
        return {"Authorization": "Bearer " + token}

    return sign


@pytest.fixture
def forget_keys(redis_url: str, unique_name: str) -> Iterator[None]:
    """After the test, the Redis keys under its unique name are gone (use with usefixtures)."""
    yield
    redis = Redis.from_url(redis_url)
    try:
        keys = list(redis.scan_iter(match=f"{unique_name}*"))
        if keys:
            redis.delete(*keys)
    finally:
        redis.close()


@pytest.fixture
def make_settings() -> Callable[..., Settings]:
    """make_settings(redis_url, key_prefix, **overrides): every service at a port where nothing
    listens, short deadlines, and the model registry read on every request."""

    def make(redis_url: str, key_prefix: str, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "auth_grpc_target": f"127.0.0.1:{free_port()}",
            "upload_grpc_target": f"127.0.0.1:{free_port()}",
            "history_grpc_target": f"127.0.0.1:{free_port()}",
            "admin_grpc_target": f"127.0.0.1:{free_port()}",
            "redis_url": redis_url,
            "redis_key_prefix": key_prefix,
            "grpc_deadline_seconds": 3.0,
            "upload_deadline_seconds": 3.0,
            "search_deadline_seconds": 3.0,
            # Tests announce and withdraw models and expect the answer at once.
            "models_refresh_seconds": 0.0,
            "models_grace_seconds": 0.0,
        }
        return Settings(**{**values, **overrides})

    return make
