"""Signing keys on disk and the access tokens they sign, verified the way every other
service verifies them: TokenVerifier over a JwksCache fed with the published key set."""

from __future__ import annotations

import asyncio
import contextlib
import json
import stat
from datetime import UTC, datetime
from pathlib import Path

import jwt
import pytest

from auth_service import main as auth_main
from auth_service.keys import KeyRing, generate_key, key_files, load_key_ring
from auth_service.tokens import AccessTokenIssuer
from facerestore_common.errors import Unauthenticated
from facerestore_common.tokens import JwksCache, TokenVerifier

ISSUER = "facerestore-auth"
AUDIENCE = "facerestore"


def verifier_for(ring: KeyRing | list[KeyRing], min_refetch_seconds: float = 5.0) -> TokenVerifier:
    """A verifier whose key set comes from the ring (or from the last ring in the list, as it changes)."""
    rings = ring if isinstance(ring, list) else [ring]

    async def fetch() -> str:
        return rings[-1].jwks_json()

    return TokenVerifier(JwksCache(fetch, 300, min_refetch_seconds), ISSUER, AUDIENCE, leeway_seconds=0)


def kids(ring: KeyRing) -> list[str]:
    return [key["kid"] for key in json.loads(ring.jwks_json())["keys"]]


# --- the key ring ---------------------------------------------------------------------


def test_empty_directory_gets_a_new_private_key_file(tmp_path: Path) -> None:
    key_dir = tmp_path / "keys"

    ring = load_key_ring(key_dir, create_if_empty=True)

    files = list(key_dir.glob("*.pem"))
    assert [path.stem for path in files] == [ring.signing_key.kid]
    assert stat.S_IMODE(files[0].stat().st_mode) == 0o600
    assert files[0].read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")


def test_next_start_reloads_the_same_key(tmp_path: Path) -> None:
    first = load_key_ring(tmp_path, create_if_empty=True)

    second = load_key_ring(tmp_path, create_if_empty=True)

    assert second.signing_key.kid == first.signing_key.kid
    assert second.jwks_json() == first.jwks_json()
    assert len(list(tmp_path.glob("*.pem"))) == 1


def test_jwks_publishes_only_public_rs256_signing_keys(tmp_path: Path) -> None:
    ring = load_key_ring(tmp_path, create_if_empty=True)

    (key,) = json.loads(ring.jwks_json())["keys"]

    assert key["kty"] == "RSA"
    assert key["kid"] == ring.signing_key.kid
    assert key["alg"] == "RS256"
    assert key["use"] == "sig"
    assert {"n", "e"} <= set(key)
    assert not {"d", "p", "q", "dp", "dq", "qi"} & set(key)  # nothing private


def test_newly_generated_key_signs_while_the_jwks_lists_both(tmp_path: Path) -> None:
    old = load_key_ring(tmp_path, create_if_empty=True).signing_key
    new = generate_key(tmp_path)

    ring = load_key_ring(tmp_path, create_if_empty=True)

    assert ring.signing_key.kid == new.kid
    assert sorted(kids(ring)) == sorted([old.kid, new.kid])


def test_the_last_generated_key_signs_even_when_keys_are_made_in_quick_succession(tmp_path: Path) -> None:
    generated = [generate_key(tmp_path).kid for _ in range(4)]

    ring = load_key_ring(tmp_path, create_if_empty=False)

    assert ring.signing_key.kid == generated[-1]
    assert kids(ring) == generated  # oldest first


def test_key_named_with_whole_seconds_only_is_older_than_a_key_generated_after_it(tmp_path: Path) -> None:
    """Keys written before kids carried microseconds keep their place: a later key still signs."""
    made = generate_key(tmp_path / "elsewhere")
    legacy_kid = f"{datetime.now(UTC):%Y%m%dT%H%M%S}-deadbeef"
    (tmp_path / "elsewhere" / f"{made.kid}.pem").rename(tmp_path / f"{legacy_kid}.pem")
    new = generate_key(tmp_path)

    ring = load_key_ring(tmp_path, create_if_empty=False)

    assert ring.signing_key.kid == new.kid
    assert kids(ring) == [legacy_kid, new.kid]


def test_missing_key_is_an_error_naming_the_directory_when_creation_is_off(tmp_path: Path) -> None:
    key_dir = tmp_path / "empty"
    key_dir.mkdir()

    with pytest.raises(FileNotFoundError, match=str(key_dir)):
        load_key_ring(key_dir, create_if_empty=False)
    assert list(key_dir.iterdir()) == []


def test_missing_key_directory_is_an_error_naming_it_when_creation_is_off(tmp_path: Path) -> None:
    key_dir = tmp_path / "does-not-exist"

    with pytest.raises(FileNotFoundError, match=str(key_dir)):
        load_key_ring(key_dir, create_if_empty=False)
    assert not key_dir.exists()


def test_key_files_change_when_a_key_is_added_replaced_or_deleted(tmp_path: Path) -> None:
    first = generate_key(tmp_path)
    before = key_files(tmp_path)
    assert key_files(tmp_path) == before

    second = generate_key(tmp_path)
    added = key_files(tmp_path)
    assert added != before

    # A mounted Secret swaps the file for another one of the same name.
    path = tmp_path / f"{second.kid}.pem"
    replacement = tmp_path / "replacement"
    replacement.write_bytes(path.read_bytes())
    replacement.replace(path)
    assert key_files(tmp_path) != added

    (tmp_path / f"{first.kid}.pem").unlink()
    assert {name for name, *_ in key_files(tmp_path)} == {f"{second.kid}.pem"}


async def test_the_key_directory_is_parsed_again_only_after_it_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ring = load_key_ring(tmp_path, create_if_empty=True)
    old_kid = ring.signing_key.kid
    loads: list[Path] = []

    def counted_load(directory: Path, create_if_empty: bool, activation_seconds: float = 0.0) -> KeyRing:
        loads.append(directory)
        return load_key_ring(directory, create_if_empty, activation_seconds)

    monkeypatch.setattr(auth_main, "load_key_ring", counted_load)
    reloader = asyncio.create_task(auth_main.reload_keys_forever(ring, tmp_path, 0, 0.0))
    try:
        for _ in range(20):
            await asyncio.sleep(0)  # about one pass of the reloader each
        assert len(loads) == 1  # its first look; nothing changed since

        new = generate_key(tmp_path)
        for _ in range(20):
            await asyncio.sleep(0)
        assert ring.kids == [old_kid, new.kid]
        assert ring.signing_key.kid == new.kid
        assert len(loads) == 2
    finally:
        reloader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reloader


# --- access tokens --------------------------------------------------------------------


async def test_access_token_verifies_and_carries_the_user(tmp_path: Path) -> None:
    ring = load_key_ring(tmp_path, create_if_empty=True)
    issuer = AccessTokenIssuer(ring, ISSUER, AUDIENCE, ttl_seconds=900)

    token = issuer.issue("user-1", "admin", "session-1")
    principal = await verifier_for(ring).verify(token)

    assert principal.user_id == "user-1"
    assert principal.role == "admin"
    assert principal.session_id == "session-1"
    assert principal.token == token
    assert len(principal.token_id) == 32
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "RS256"
    assert header["kid"] == ring.signing_key.kid
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 900
    assert (claims["iss"], claims["aud"]) == (ISSUER, AUDIENCE)


async def test_each_token_has_its_own_id(tmp_path: Path) -> None:
    ring = load_key_ring(tmp_path, create_if_empty=True)
    issuer = AccessTokenIssuer(ring, ISSUER, AUDIENCE, ttl_seconds=900)
    verifier = verifier_for(ring)

    first = await verifier.verify(issuer.issue("user-1", "user", "s"))
    second = await verifier.verify(issuer.issue("user-1", "user", "s"))

    assert first.token_id != second.token_id


async def test_token_signed_by_the_older_key_still_verifies_after_rotation(tmp_path: Path) -> None:
    before = load_key_ring(tmp_path, create_if_empty=True)
    old_token = AccessTokenIssuer(before, ISSUER, AUDIENCE, ttl_seconds=900).issue("user-1", "user", "s-old")
    generate_key(tmp_path)
    after = load_key_ring(tmp_path, create_if_empty=True)
    new_token = AccessTokenIssuer(after, ISSUER, AUDIENCE, ttl_seconds=900).issue("user-2", "user", "s-new")
    verifier = verifier_for(after)

    assert jwt.get_unverified_header(old_token)["kid"] == before.signing_key.kid
    assert jwt.get_unverified_header(new_token)["kid"] == after.signing_key.kid != before.signing_key.kid
    assert (await verifier.verify(old_token)).session_id == "s-old"
    assert (await verifier.verify(new_token)).session_id == "s-new"


async def test_verifier_that_cached_the_old_key_set_learns_the_new_key(tmp_path: Path) -> None:
    rings = [load_key_ring(tmp_path, create_if_empty=True)]
    verifier = verifier_for(rings, min_refetch_seconds=0.0)
    await verifier.verify(AccessTokenIssuer(rings[-1], ISSUER, AUDIENCE, 900).issue("u", "user", "s"))

    generate_key(tmp_path)
    rings.append(load_key_ring(tmp_path, create_if_empty=True))
    token = AccessTokenIssuer(rings[-1], ISSUER, AUDIENCE, 900).issue("u", "user", "s2")

    assert (await verifier.verify(token)).session_id == "s2"


async def test_token_signed_by_a_key_that_is_not_published_is_refused(tmp_path: Path) -> None:
    ours = load_key_ring(tmp_path / "ours", create_if_empty=True)
    theirs = load_key_ring(tmp_path / "theirs", create_if_empty=True)
    forged = AccessTokenIssuer(theirs, ISSUER, AUDIENCE, 900).issue("user-1", "admin", "s")

    with pytest.raises(Unauthenticated) as caught:
        await verifier_for(ours).verify(forged)
    assert caught.value.reason == "invalid-token"


async def test_token_with_a_published_kid_but_another_keys_signature_is_refused(tmp_path: Path) -> None:
    ours = load_key_ring(tmp_path / "ours", create_if_empty=True)
    theirs = load_key_ring(tmp_path / "theirs", create_if_empty=True)
    claims = jwt.decode(
        AccessTokenIssuer(ours, ISSUER, AUDIENCE, 900).issue("user-1", "user", "s"),
        options={"verify_signature": False},
    )
    forged = jwt.encode(
        {**claims, "role": "admin"},
        theirs.signing_key.private_key,
        algorithm="RS256",
        headers={"kid": ours.signing_key.kid},
    )

    with pytest.raises(Unauthenticated) as caught:
        await verifier_for(ours).verify(forged)
    assert caught.value.reason == "invalid-token"


async def test_token_for_another_audience_or_issuer_is_refused(tmp_path: Path) -> None:
    ring = load_key_ring(tmp_path, create_if_empty=True)
    verifier = verifier_for(ring)

    for issuer, audience in (("someone-else", AUDIENCE), (ISSUER, "another-app")):
        token = AccessTokenIssuer(ring, issuer, audience, 900).issue("user-1", "user", "s")
        with pytest.raises(Unauthenticated) as caught:
            await verifier.verify(token)
        assert caught.value.reason == "invalid-token"


async def test_expired_token_is_refused(tmp_path: Path) -> None:
    ring = load_key_ring(tmp_path, create_if_empty=True)
    token = AccessTokenIssuer(ring, ISSUER, AUDIENCE, ttl_seconds=-5).issue("user-1", "user", "s")

    with pytest.raises(Unauthenticated) as caught:
        await verifier_for(ring).verify(token)
    assert caught.value.reason == "token-expired"
