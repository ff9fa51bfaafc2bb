"""Signing keys, a JWKS document and token minting for the token and gRPC server tests.

The keys are generated here and published as a real JWKS document, so the verifier
under test runs the same code path as it does against the auth service."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from facerestore_common.tokens import JwksCache, TokenVerifier

ISSUER = "facerestore-auth"
AUDIENCE = "facerestore"
KID = "key-1"


def _new_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _claims(**overrides: Any) -> dict[str, Any]:
    """Valid access-token claims; an override of None removes that claim."""
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "user-42",
        "sid": "session-7",
        "jti": uuid.uuid4().hex,
        "role": "user",
        "iat": now,
        "exp": now + 600,
    }
    base.update(overrides)
    return {name: value for name, value in base.items() if value is not None}


@pytest.fixture(scope="session")
def signing_key() -> rsa.RSAPrivateKey:
    return _new_rsa_key()


@pytest.fixture(scope="session")
def other_key() -> rsa.RSAPrivateKey:
    """A second key pair that the JWKS does not publish."""
    return _new_rsa_key()


@pytest.fixture
def kid() -> str:
    return KID


@pytest.fixture
def jwks_for() -> Callable[[dict[str, rsa.RSAPrivateKey]], str]:
    """jwks_for({kid: private_key}) -> a JWKS JSON document with the public halves."""

    def document(keys: dict[str, rsa.RSAPrivateKey]) -> str:
        entries = []
        for key_id, key in keys.items():
            jwk: dict[str, Any] = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
            entries.append({**jwk, "kid": key_id, "use": "sig", "alg": "RS256"})
        return json.dumps({"keys": entries})

    return document


@pytest.fixture
def jwks_json(jwks_for: Callable[[dict[str, rsa.RSAPrivateKey]], str], signing_key: rsa.RSAPrivateKey) -> str:
    return jwks_for({KID: signing_key})


@pytest.fixture
def make_claims() -> Callable[..., dict[str, Any]]:
    return _claims


@pytest.fixture
def mint(signing_key: rsa.RSAPrivateKey) -> Callable[..., str]:
    """mint(key=..., kid=..., **claim_overrides) -> an RS256 access token."""

    def make(*, key: rsa.RSAPrivateKey | None = None, kid: str = KID, **overrides: Any) -> str:
        return jwt.encode(_claims(**overrides), key or signing_key, algorithm="RS256", headers={"kid": kid})

    return make


@pytest.fixture
def make_verifier() -> Callable[..., TokenVerifier]:
    """make_verifier(fetch, leeway_seconds=10, min_refetch_seconds=5.0) -> a TokenVerifier
    for this issuer and audience, its keys cached from `fetch`."""

    def make(
        fetch: Callable[[], Awaitable[str]], *, leeway_seconds: int = 10, min_refetch_seconds: float = 5.0
    ) -> TokenVerifier:
        cache = JwksCache(fetch, ttl_seconds=300, min_refetch_seconds=min_refetch_seconds)
        return TokenVerifier(cache, ISSUER, AUDIENCE, leeway_seconds)

    return make
