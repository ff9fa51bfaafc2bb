"""What the gateway's tests share: a key that signs their tokens, settings that point every
service at a port where nothing listens, and removing the Redis keys a test made."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from redis import Redis

from gateway_service.settings import Settings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def signing_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


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
