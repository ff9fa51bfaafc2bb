"""The operator commands, run as `python -m auth_service.cli` runs them (main() with the
settings read from the environment) against the Mongo stand-in, real Redis and a key
directory of the test's own.

main() calls asyncio.run itself, so these tests are plain functions; data is set up and
inspected with asyncio.run of their own."""

from __future__ import annotations

import asyncio
import getpass
import json
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from motor.motor_asyncio import AsyncIOMotorDatabase
from redis.asyncio import Redis

from auth_service.cli import main
from auth_service.keys import generate_key, load_key_ring
from auth_service.sessions import SessionStore
from auth_service.tokens import AccessTokenIssuer
from auth_service.users import User, UserRepository
from facerestore_common import mongo
from facerestore_common.revocation import SessionRevocations
from facerestore_common.tokens import JwksCache, TokenVerifier

PHONE = "+4915123456789"
UNKNOWN_PHONE = "+4915198765432"
ACCESS_TTL = 60
RELOAD_SECONDS = 1
KEEP_SECONDS = ACCESS_TTL + 0 + RELOAD_SECONDS  # access ttl + leeway + reload interval

T = TypeVar("T")


class Stores:
    """Connections for one asyncio.run: the test's database and Redis key prefix."""

    def __init__(self, mongo_url: str, redis_url: str, name: str) -> None:
        self.database: AsyncIOMotorDatabase = mongo.connect(mongo_url, name)
        self.redis = Redis.from_url(redis_url)
        self.name = name
        self.users = UserRepository(self.database)
        self.sessions = SessionStore(self.database, 3600, SessionRevocations(self.redis, name), ACCESS_TTL)

    async def revoked(self, session_id: str) -> bool:
        return await SessionRevocations(self.redis, self.name).is_revoked(session_id)

    async def close(self) -> None:
        await self.redis.aclose()
        self.database.client.close()


Run = Callable[[Callable[[Stores], Awaitable[T]]], T]


@pytest.fixture
def stores(mongo_url: str, redis_url: str, unique_name: str) -> Iterator[Run[Any]]:
    """Runs a coroutine on fresh connections (each asyncio.run has its own event loop);
    drops the database and the Redis keys afterwards."""

    def run(work: Callable[[Stores], Awaitable[T]]) -> T:
        async def with_stores() -> T:
            opened = Stores(mongo_url, redis_url, unique_name)
            try:
                return await work(opened)
            finally:
                await opened.close()

        return asyncio.run(with_stores())

    yield run

    async def clean(opened: Stores) -> None:
        await opened.database.client.drop_database(unique_name)
        keys = [key async for key in opened.redis.scan_iter(match=f"{unique_name}:*")]
        if keys:
            await opened.redis.delete(*keys)

    run(clean)


@pytest.fixture
def key_dir(tmp_path: Path) -> Path:
    return tmp_path / "keys"


@pytest.fixture(autouse=True)
def environment(
    monkeypatch: pytest.MonkeyPatch, mongo_url: str, redis_url: str, unique_name: str, key_dir: Path
) -> None:
    for name, value in {
        "ENVIRONMENT": "development",
        "MONGO_URL": mongo_url,
        "MONGO_DATABASE": unique_name,
        "REDIS_URL": redis_url,
        "REDIS_KEY_PREFIX": unique_name,
        "JWT_KEY_DIR": str(key_dir),
        "ACCESS_TOKEN_TTL_SECONDS": str(ACCESS_TTL),
        "JWT_LEEWAY_SECONDS": "0",
        "JWT_KEY_RELOAD_SECONDS": str(RELOAD_SECONDS),
        # A new key signs at once here, so the time to keep an old key is the three above.
        "JWT_KEY_ACTIVATION_SECONDS": "0",
        "PHONE_DEFAULT_REGION": "DE",
    }.items():
        monkeypatch.setenv(name, value)


def age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def key_path(key_dir: Path, kid: str) -> Path:
    return key_dir / f"{kid}.pem"


# --- signing keys ---------------------------------------------------------------------


def test_rotate_keys_adds_a_key_that_signs_while_the_old_one_stays_published(
    key_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old_ring = load_key_ring(key_dir, create_if_empty=True)
    old_kid = old_ring.signing_key.kid
    old_token = AccessTokenIssuer(old_ring, "facerestore-auth", "facerestore", ACCESS_TTL).issue("u1", "user", "s1")

    assert main(["rotate-keys"]) == 0

    ring = load_key_ring(key_dir, create_if_empty=False)
    new_kid = ring.signing_key.kid
    assert new_kid != old_kid
    assert ring.kids == [old_kid, new_kid]
    out = capsys.readouterr().out.strip()
    assert out.startswith(f"new signing key {new_kid};")
    assert out.endswith(f"live keys: {old_kid}, {new_kid}")
    published = [key["kid"] for key in json.loads(ring.jwks_json())["keys"]]
    assert published == [old_kid, new_kid]

    async def fetch() -> str:
        return ring.jwks_json()

    async def verify(token: str) -> str:
        verifier = TokenVerifier(JwksCache(fetch, 300), "facerestore-auth", "facerestore", 0)
        return (await verifier.verify(token)).user_id

    new_token = AccessTokenIssuer(ring, "facerestore-auth", "facerestore", ACCESS_TTL).issue("u2", "user", "s2")
    assert asyncio.run(verify(old_token)) == "u1"  # tokens signed before the rotation keep working
    assert asyncio.run(verify(new_token)) == "u2"


def test_prune_keys_keeps_an_old_key_while_its_successor_is_younger_than_a_token_can_live(
    key_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = generate_key(key_dir)
    successor = generate_key(key_dir)
    age(key_path(key_dir, old.kid), 10 * KEEP_SECONDS)
    age(key_path(key_dir, successor.kid), KEEP_SECONDS - 10)

    assert main(["prune-keys"]) == 0

    assert capsys.readouterr().out.strip() == "no key is old enough to delete"
    assert load_key_ring(key_dir, create_if_empty=False).kids == [old.kid, successor.kid]


def test_prune_keys_deletes_an_old_key_once_its_successor_has_signed_long_enough(
    key_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    oldest = generate_key(key_dir)
    middle = generate_key(key_dir)
    newest = generate_key(key_dir)
    age(key_path(key_dir, oldest.kid), 10 * KEEP_SECONDS)
    age(key_path(key_dir, middle.kid), KEEP_SECONDS + 30)
    # The newest key signs now: tokens signed by `middle` may still be alive.

    assert main(["prune-keys"]) == 0

    assert capsys.readouterr().out.strip() == f"deleted keys: {oldest.kid}"
    assert load_key_ring(key_dir, create_if_empty=False).kids == [middle.kid, newest.kid]


def test_prune_keys_never_deletes_the_only_key(key_dir: Path) -> None:
    only = generate_key(key_dir)
    age(key_path(key_dir, only.kid), 100 * KEEP_SECONDS)

    assert main(["prune-keys"]) == 0

    assert load_key_ring(key_dir, create_if_empty=False).kids == [only.kid]


# --- accounts -------------------------------------------------------------------------


def sign_up(stores: Run[Any], phone: str = PHONE) -> tuple[User, str]:
    """A user who has signed in once: the account and the id of its live session."""

    async def work(opened: Stores) -> tuple[User, str]:
        user = await opened.users.sign_in(phone, promote_to_admin=False)
        return user, (await opened.sessions.start(user.id)).session_id

    result: tuple[User, str] = stores(work)
    return result


def test_set_role_promotes_the_user_records_the_change_and_ends_their_sessions(
    stores: Run[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    user, session_id = sign_up(stores)

    assert main(["set-role", "0151 23456789", "admin"]) == 0

    assert capsys.readouterr().out.strip() == f"user {user.id}: role admin, not banned"

    async def inspect(opened: Stores) -> tuple[User | None, list[dict[str, Any]], bool]:
        return (
            await opened.users.get(user.id),
            await opened.users.role_changes(user.id),
            await opened.revoked(session_id),
        )

    after, changes, revoked = stores(inspect)
    assert after is not None and after.role == "admin"
    (change,) = changes
    assert {key: change[key] for key in ("from", "to", "actor", "via")} == {
        "from": "user",
        "to": "admin",
        "actor": f"cli:{getpass.getuser()}",
        "via": "cli",
    }
    assert revoked


def test_set_role_back_to_user_is_recorded_too(stores: Run[Any]) -> None:
    user, _ = sign_up(stores)
    assert main(["set-role", PHONE, "admin"]) == 0

    assert main(["set-role", PHONE, "user"]) == 0

    changes = stores(lambda opened: opened.users.role_changes(user.id))
    assert [(change["from"], change["to"]) for change in changes] == [("user", "admin"), ("admin", "user")]


def test_set_role_for_an_unknown_phone_exits_with_a_message_and_changes_nothing(stores: Run[Any]) -> None:
    user, _ = sign_up(stores)

    with pytest.raises(SystemExit) as caught:
        main(["set-role", UNKNOWN_PHONE, "admin"])

    assert caught.value.code == f"no user with phone {UNKNOWN_PHONE}"
    assert stores(lambda opened: opened.users.role_changes(user.id)) == []


def test_set_role_with_a_malformed_phone_is_an_error(stores: Run[Any], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["set-role", "not a number", "admin"]) == 2

    assert capsys.readouterr().err.strip() == "error: this is not a phone number"


def test_set_role_refuses_an_unknown_role(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["set-role", PHONE, "owner"])

    assert caught.value.code == 2
    assert "invalid choice: 'owner'" in capsys.readouterr().err


def test_ban_and_unban_flip_the_flag_and_a_ban_ends_the_sessions(
    stores: Run[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    user, session_id = sign_up(stores)
    _, bystander_session = sign_up(stores, UNKNOWN_PHONE)

    assert main(["ban", PHONE]) == 0

    assert capsys.readouterr().out.strip() == f"user {user.id}: role user, banned"

    async def state(opened: Stores) -> tuple[bool, bool, bool]:
        stored = await opened.users.get(user.id)
        assert stored is not None
        return stored.banned, await opened.revoked(session_id), await opened.revoked(bystander_session)

    assert stores(state) == (True, True, False)

    assert main(["unban", PHONE]) == 0

    assert capsys.readouterr().out.strip() == f"user {user.id}: role user, not banned"
    banned, _, _ = stores(state)
    assert banned is False


def test_ban_of_an_unknown_phone_exits_with_a_message() -> None:
    with pytest.raises(SystemExit) as caught:
        main(["ban", UNKNOWN_PHONE])

    assert caught.value.code == f"no user with phone {UNKNOWN_PHONE}"
