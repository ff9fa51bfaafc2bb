"""TokenVerifier remembers tokens it has checked (a client sends the same one with every request),
but never an ended session nor a token past its expiry."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from facerestore_common.errors import Unauthenticated
from facerestore_common.tokens import JwksCache, TokenVerifier

KID = "verifier-test-key"


class _EndedSessions:
    def __init__(self) -> None:
        self.ended: set[str] = set()
        self.asked = 0

    async def is_revoked(self, session_id: str) -> bool:
        self.asked += 1
        return session_id in self.ended


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _verifier(key: rsa.RSAPrivateKey, sessions: _EndedSessions, fetched: list[int]) -> TokenVerifier:
    jwk: dict[str, Any] = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    document = json.dumps({"keys": [{**jwk, "kid": KID, "use": "sig", "alg": "RS256"}]})

    async def fetch() -> str:
        fetched.append(1)
        return document

    return TokenVerifier(JwksCache(fetch, 300), "issuer", "audience", 0, revocations=sessions)  # type: ignore[arg-type]


def _token(key: rsa.RSAPrivateKey, session_id: str, lifetime: int = 600) -> str:
    now = int(time.time())
    claims = {
        "iss": "issuer",
        "aud": "audience",
        "sub": "user-1",
        "role": "user",
        "sid": session_id,
        "jti": uuid.uuid4().hex,
        "iat": now,
        "exp": now + lifetime,
    }
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": KID})


async def test_a_remembered_token_is_still_refused_once_its_session_has_ended(key: rsa.RSAPrivateKey) -> None:
    sessions, fetched = _EndedSessions(), []
    verifier = _verifier(key, sessions, fetched)
    token = _token(key, "session-1")

    first = await verifier.verify(token)
    again = await verifier.verify(token)
    sessions.ended.add("session-1")
    with pytest.raises(Unauthenticated) as ended:
        await verifier.verify(token)

    assert first == again and first.session_id == "session-1"
    assert ended.value.reason == "session-revoked"
    # The session is asked about on every request, the signature checked once.
    assert sessions.asked == 3
    assert len(fetched) == 1


async def test_a_remembered_token_is_not_accepted_past_its_expiry(key: rsa.RSAPrivateKey) -> None:
    verifier = _verifier(key, _EndedSessions(), [])
    token = _token(key, "session-2", lifetime=1)

    await verifier.verify(token)
    await asyncio.sleep(2.1)
    with pytest.raises(Unauthenticated) as expired:
        await verifier.verify(token)

    assert expired.value.reason == "token-expired"


async def test_a_forged_token_is_refused_every_time(key: rsa.RSAPrivateKey) -> None:
    verifier = _verifier(key, _EndedSessions(), [])
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = _token(other, "session-3")

    for _ in range(2):
        with pytest.raises(Unauthenticated) as refused:
            await verifier.verify(forged)
        assert refused.value.reason == "invalid-token"
