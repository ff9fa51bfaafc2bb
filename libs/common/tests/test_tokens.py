"""Access-token verification against a JWKS: what is accepted, what is refused, and
when the key cache goes back to the auth service."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from facerestore_common.errors import Unauthenticated
from facerestore_common.tokens import Principal, TokenVerifier, bearer_token

Mint = Callable[..., str]
MakeVerifier = Callable[..., TokenVerifier]


class CountingFetcher:
    """Serves a JWKS document the test can swap, and counts how often it was asked."""

    def __init__(self, document: str) -> None:
        self.document = document
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        return self.document


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned_parts(header: dict[str, Any], claims: dict[str, Any]) -> str:
    return f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"


@pytest.fixture
def fetcher(jwks_json: str) -> CountingFetcher:
    return CountingFetcher(jwks_json)


@pytest.fixture
def verifier(make_verifier: MakeVerifier, fetcher: CountingFetcher) -> TokenVerifier:
    return make_verifier(fetcher, leeway_seconds=10)


async def refused(verifier: TokenVerifier, token: str) -> Unauthenticated:
    with pytest.raises(Unauthenticated) as caught:
        await verifier.verify(token)
    return caught.value


async def test_valid_token_yields_its_principal(verifier: TokenVerifier, mint: Mint) -> None:
    token = mint(sub="user-1", sid="session-1", jti="token-1", role="admin")

    principal = await verifier.verify(token)

    assert principal == Principal(
        user_id="user-1", role="admin", session_id="session-1", token_id="token-1", token=token
    )
    assert principal.is_admin


async def test_user_role_is_not_admin(verifier: TokenVerifier, mint: Mint) -> None:
    principal = await verifier.verify(mint(role="user"))

    assert principal.role == "user"
    assert not principal.is_admin


async def test_unsigned_alg_none_token_is_refused(
    verifier: TokenVerifier, make_claims: Callable[..., dict[str, Any]], kid: str
) -> None:
    token = unsigned_parts({"alg": "none", "typ": "JWT", "kid": kid}, make_claims()) + "."

    error = await refused(verifier, token)

    assert error.reason == "invalid-token"


async def test_hs256_signed_with_the_public_key_is_refused(
    verifier: TokenVerifier,
    make_claims: Callable[..., dict[str, Any]],
    signing_key: rsa.RSAPrivateKey,
    kid: str,
) -> None:
    # The classic algorithm-confusion attack: the public key is public, so an attacker
    # can HMAC-sign with its PEM bytes and hope the verifier uses it as an HMAC secret.
    public_pem = signing_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signing_input = unsigned_parts({"alg": "HS256", "typ": "JWT", "kid": kid}, make_claims(role="admin"))
    signature = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()

    error = await refused(verifier, f"{signing_input}.{b64url(signature)}")

    assert error.reason == "invalid-token"


async def test_token_signed_by_another_key_under_the_known_kid_is_refused(
    verifier: TokenVerifier, mint: Mint, other_key: rsa.RSAPrivateKey
) -> None:
    error = await refused(verifier, mint(key=other_key))

    assert error.reason == "invalid-token"


async def test_tampered_payload_is_refused(
    verifier: TokenVerifier, mint: Mint, make_claims: Callable[..., dict[str, Any]]
) -> None:
    header, _, signature = mint(role="user").split(".")
    forged_payload = b64url(json.dumps(make_claims(role="admin")).encode())

    error = await refused(verifier, f"{header}.{forged_payload}.{signature}")

    assert error.reason == "invalid-token"


async def test_token_expired_beyond_the_leeway_is_refused(verifier: TokenVerifier, mint: Mint) -> None:
    now = int(time.time())

    error = await refused(verifier, mint(iat=now - 600, exp=now - 30))  # leeway is 10 s

    assert error.reason == "token-expired"


async def test_token_expired_within_the_leeway_is_accepted(verifier: TokenVerifier, mint: Mint) -> None:
    now = int(time.time())

    principal = await verifier.verify(mint(iat=now - 600, exp=now - 3))  # leeway is 10 s

    assert principal.user_id == "user-42"


async def test_token_for_another_audience_is_refused(verifier: TokenVerifier, mint: Mint) -> None:
    error = await refused(verifier, mint(aud="some-other-service"))

    assert error.reason == "invalid-token"


async def test_token_from_another_issuer_is_refused(verifier: TokenVerifier, mint: Mint) -> None:
    error = await refused(verifier, mint(iss="someone-else"))

    assert error.reason == "invalid-token"


@pytest.mark.parametrize("claim", ["sub", "sid", "jti", "role", "exp", "iat"])
async def test_token_missing_a_required_claim_is_refused(verifier: TokenVerifier, mint: Mint, claim: str) -> None:
    error = await refused(verifier, mint(**{claim: None}))

    assert error.reason == "invalid-token"


async def test_token_with_an_unknown_role_is_refused(verifier: TokenVerifier, mint: Mint) -> None:
    error = await refused(verifier, mint(role="superuser"))

    assert error.reason == "invalid-token"


@pytest.mark.parametrize("token", ["", "not-a-jwt", "a.b.c", "a.b"])
async def test_malformed_token_is_refused(verifier: TokenVerifier, token: str) -> None:
    error = await refused(verifier, token)

    assert error.reason == "invalid-token"


async def test_token_without_a_kid_is_refused_without_fetching_keys(
    verifier: TokenVerifier,
    make_claims: Callable[..., dict[str, Any]],
    signing_key: rsa.RSAPrivateKey,
    fetcher: CountingFetcher,
) -> None:
    token = jwt.encode(make_claims(), signing_key, algorithm="RS256")

    error = await refused(verifier, token)

    assert error.reason == "invalid-token"
    assert fetcher.calls == 0


async def test_keys_are_fetched_once_and_then_served_from_the_cache(
    verifier: TokenVerifier, mint: Mint, fetcher: CountingFetcher
) -> None:
    for _ in range(3):
        await verifier.verify(mint())

    assert fetcher.calls == 1


async def test_unknown_kid_refetches_the_keys_once_then_is_refused(
    make_verifier: MakeVerifier, fetcher: CountingFetcher, mint: Mint
) -> None:
    verifier = make_verifier(fetcher, min_refetch_seconds=0)
    await verifier.verify(mint())
    assert fetcher.calls == 1

    error = await refused(verifier, mint(kid="key-unknown"))

    assert error.reason == "invalid-token"
    assert fetcher.calls == 2


async def test_unknown_kid_refetch_picks_up_a_rotated_key(
    make_verifier: MakeVerifier,
    fetcher: CountingFetcher,
    mint: Mint,
    jwks_for: Callable[[dict[str, rsa.RSAPrivateKey]], str],
    signing_key: rsa.RSAPrivateKey,
    other_key: rsa.RSAPrivateKey,
    kid: str,
) -> None:
    verifier = make_verifier(fetcher, min_refetch_seconds=0)
    await verifier.verify(mint())
    fetcher.document = jwks_for({kid: signing_key, "key-2": other_key})  # the auth service rotated

    principal = await verifier.verify(mint(key=other_key, kid="key-2", sub="user-rotated"))

    assert principal.user_id == "user-rotated"
    assert fetcher.calls == 2


async def test_unknown_kids_do_not_hammer_the_auth_service(
    make_verifier: MakeVerifier, fetcher: CountingFetcher, mint: Mint
) -> None:
    verifier = make_verifier(fetcher, min_refetch_seconds=60)
    await verifier.verify(mint())

    for attempt in range(5):
        await refused(verifier, mint(kid=f"key-unknown-{attempt}"))

    assert fetcher.calls == 1


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Bearer abc.def.ghi", "abc.def.ghi"),
        ("bearer abc.def.ghi", "abc.def.ghi"),
        ("BEARER   abc.def.ghi  ", "abc.def.ghi"),
        (None, None),
        ("", None),
        ("Bearer", None),
        ("Bearer    ", None),
        ("Basic dXNlcjpwYXNz", None),
        ("Token abc.def.ghi", None),
        ("abc.def.ghi", None),
    ],
)
def test_bearer_token_is_taken_only_from_a_bearer_authorization_header(
    header: str | None, expected: str | None
) -> None:
    assert bearer_token(header) == expected
