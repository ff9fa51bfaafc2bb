"""Download tokens: the capability an image URL carries. Only what the service itself signed,
for a known rendition and within its lifetime, reads back."""

from __future__ import annotations

import time

import jwt
import pytest

from facerestore_common.errors import NotFound
from history_service.downloads import KINDS, DownloadGrant, DownloadTokens

SECRET = "downloads-test-secret-0123456789abcdef0123"


@pytest.mark.parametrize("kind", KINDS)
def test_an_issued_token_reads_back_as_the_same_image_and_kind(kind: str) -> None:
    tokens = DownloadTokens(SECRET, ttl_seconds=60)

    assert tokens.read(tokens.issue("img-42", kind)) == DownloadGrant(image_id="img-42", kind=kind)


def test_a_token_expires_after_its_ttl_with_at_least_two_thirds_of_it_left() -> None:
    token = DownloadTokens(SECRET, ttl_seconds=60).issue("img-42", "original")
    claims = jwt.decode(token, options={"verify_signature": False})

    assert claims["exp"] - claims["iat"] == 60
    # Handed out again for a third of its lifetime, so it was issued at most 20 s ago.
    assert 40 <= claims["exp"] - time.time() <= 60


def test_the_same_link_is_handed_out_again_within_a_third_of_its_lifetime() -> None:
    tokens = DownloadTokens(SECRET, ttl_seconds=900)

    first = tokens.issue("img-42", "original")
    assert tokens.issue("img-42", "original") == first
    assert tokens.issue("img-42", "restored") != first
    assert tokens.issue("img-43", "original") != first


def test_a_token_without_an_expiry_is_refused() -> None:
    # Signed with the right secret, for a known image and kind, but good forever: refused.
    now = int(time.time())
    forever = jwt.encode(
        {"img": "img-42", "kind": "original", "aud": "facerestore-download", "iat": now}, SECRET, algorithm="HS256"
    )

    with pytest.raises(NotFound):
        DownloadTokens(SECRET, ttl_seconds=60).read(forever)


@pytest.mark.parametrize("missing", ["aud", "kind", "img"])
def test_a_token_missing_its_audience_kind_or_image_is_refused(missing: str) -> None:
    now = int(time.time())
    claims = {"img": "img-42", "kind": "original", "aud": "facerestore-download", "iat": now, "exp": now + 60}
    del claims[missing]

    with pytest.raises(NotFound):
        DownloadTokens(SECRET, ttl_seconds=60).read(jwt.encode(claims, SECRET, algorithm="HS256"))


def test_a_token_signed_with_another_secret_is_refused() -> None:
    forged = DownloadTokens("some-other-secret-0123456789abcdef0123", ttl_seconds=60).issue("img-42", "original")

    with pytest.raises(NotFound) as raised:
        DownloadTokens(SECRET, ttl_seconds=60).read(forged)
    assert raised.value.reason == "not-found"


def test_a_token_for_an_unknown_kind_is_refused() -> None:
    tokens = DownloadTokens(SECRET, ttl_seconds=60)

    with pytest.raises(NotFound):
        tokens.read(tokens.issue("img-42", "database-dump"))


def test_an_expired_token_is_refused() -> None:
    now = int(time.time())
    expired = jwt.encode(
        {"img": "img-42", "kind": "original", "aud": "facerestore-download", "iat": now - 120, "exp": now - 60},
        SECRET,
        algorithm="HS256",
    )

    with pytest.raises(NotFound):
        DownloadTokens(SECRET, ttl_seconds=60).read(expired)


def test_a_token_for_another_audience_is_refused() -> None:
    # e.g. some other HS256 token that happens to share the secret.
    now = int(time.time())
    other = jwt.encode(
        {"img": "img-42", "kind": "original", "aud": "facerestore", "iat": now, "exp": now + 60},
        SECRET,
        algorithm="HS256",
    )

    with pytest.raises(NotFound):
        DownloadTokens(SECRET, ttl_seconds=60).read(other)


def test_a_token_without_an_image_id_string_is_refused() -> None:
    now = int(time.time())
    token = jwt.encode(
        {"img": 42, "kind": "original", "aud": "facerestore-download", "iat": now, "exp": now + 60},
        SECRET,
        algorithm="HS256",
    )

    with pytest.raises(NotFound):
        DownloadTokens(SECRET, ttl_seconds=60).read(token)


def test_an_unsigned_token_is_refused() -> None:
    now = int(time.time())
    unsigned = jwt.encode(
        {"img": "img-42", "kind": "original", "aud": "facerestore-download", "iat": now, "exp": now + 60},
        None,
        algorithm="none",
    )

    with pytest.raises(NotFound):
        DownloadTokens(SECRET, ttl_seconds=60).read(unsigned)


@pytest.mark.parametrize("garbage", ["", "not-a-token", "a.b.c"])
def test_garbage_is_refused(garbage: str) -> None:
    with pytest.raises(NotFound):
        DownloadTokens(SECRET, ttl_seconds=60).read(garbage)
