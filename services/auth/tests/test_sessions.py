"""Sessions and refresh tokens on the Mongo stand-in: a refresh token is spent by use and
replaced by its successor; presenting a spent one ends the whole session."""

from __future__ import annotations

import hashlib

import pytest
from motor.motor_asyncio import AsyncIOMotorDatabase

from auth_service.sessions import SessionStore
from facerestore_common.errors import Unauthenticated
from facerestore_common.timeutil import now_ms

TTL_SECONDS = 3600


@pytest.fixture
async def sessions(database: AsyncIOMotorDatabase) -> SessionStore:
    store = SessionStore(database, ttl_seconds=TTL_SECONDS)
    await store.create_indexes()
    return store


async def refused(sessions: SessionStore, token: str) -> None:
    with pytest.raises(Unauthenticated) as caught:
        await sessions.rotate(token)
    assert caught.value.reason == "invalid-refresh-token"


async def test_started_session_has_a_refresh_token_stored_only_as_a_hash(
    sessions: SessionStore, database: AsyncIOMotorDatabase
) -> None:
    before = now_ms()
    grant = await sessions.start("user-1")

    assert grant.user_id == "user-1"
    assert len(grant.refresh_token) >= 40
    docs = await database["refresh_tokens"].find({}).to_list(None)
    assert len(docs) == 1
    doc = docs[0]
    assert doc["_id"] == hashlib.sha256(grant.refresh_token.encode()).hexdigest()
    assert grant.refresh_token not in {str(value) for value in doc.values()}
    assert doc["session_id"] == grant.session_id
    assert doc["user_id"] == "user-1"
    assert (doc["used"], doc["revoked"]) == (False, False)
    assert before <= doc["created_at_ms"] <= now_ms()
    assert doc["expires_at_ms"] - doc["created_at_ms"] == TTL_SECONDS * 1000


async def test_each_sign_in_starts_its_own_session(sessions: SessionStore) -> None:
    first = await sessions.start("user-1")
    second = await sessions.start("user-1")

    assert first.session_id != second.session_id
    assert first.refresh_token != second.refresh_token


async def test_rotate_returns_a_new_token_for_the_same_session(sessions: SessionStore) -> None:
    grant = await sessions.start("user-1")

    rotated = await sessions.rotate(grant.refresh_token)

    assert rotated.refresh_token != grant.refresh_token
    assert rotated.session_id == grant.session_id
    assert rotated.user_id == "user-1"
    # The successor can be rotated in turn, and so on.
    again = await sessions.rotate(rotated.refresh_token)
    assert again.session_id == grant.session_id
    assert len({grant.refresh_token, rotated.refresh_token, again.refresh_token}) == 3


async def test_rotated_token_marks_the_old_one_used(sessions: SessionStore, database: AsyncIOMotorDatabase) -> None:
    grant = await sessions.start("user-1")

    await sessions.rotate(grant.refresh_token)

    old = await database["refresh_tokens"].find_one({"_id": hashlib.sha256(grant.refresh_token.encode()).hexdigest()})
    assert old is not None
    assert old["used"]  # the stand-in may hand a stored true back as 1
    assert old["used_at_ms"] >= old["created_at_ms"]


async def test_reusing_a_rotated_token_is_refused_and_revokes_the_session(
    sessions: SessionStore, database: AsyncIOMotorDatabase
) -> None:
    grant = await sessions.start("user-1")
    newest = await sessions.rotate(grant.refresh_token)

    await refused(sessions, grant.refresh_token)

    # The holder of the newest token is logged out too: someone else has this family.
    await refused(sessions, newest.refresh_token)
    docs = await database["refresh_tokens"].find({"session_id": grant.session_id}).to_list(None)
    assert len(docs) == 2
    assert all(doc["revoked"] for doc in docs)


async def test_reuse_in_one_session_leaves_other_sessions_alone(sessions: SessionStore) -> None:
    stolen = await sessions.start("user-1")
    other = await sessions.start("user-1")
    await sessions.rotate(stolen.refresh_token)

    await refused(sessions, stolen.refresh_token)

    assert (await sessions.rotate(other.refresh_token)).session_id == other.session_id


async def test_revoked_session_cannot_be_refreshed(sessions: SessionStore) -> None:
    grant = await sessions.start("user-1")
    rotated = await sessions.rotate(grant.refresh_token)

    await sessions.revoke(grant.session_id)

    await refused(sessions, rotated.refresh_token)


async def test_revoking_one_session_leaves_the_others(sessions: SessionStore) -> None:
    ended = await sessions.start("user-1")
    kept = await sessions.start("user-1")

    await sessions.revoke(ended.session_id)

    await refused(sessions, ended.refresh_token)
    assert (await sessions.rotate(kept.refresh_token)).session_id == kept.session_id


async def test_unknown_refresh_token_is_refused(sessions: SessionStore) -> None:
    await sessions.start("user-1")

    await refused(sessions, "not-a-token-anyone-was-given")


async def test_expired_refresh_token_is_refused(sessions: SessionStore, database: AsyncIOMotorDatabase) -> None:
    grant = await sessions.start("user-1")
    await database["refresh_tokens"].update_one(
        {"session_id": grant.session_id}, {"$set": {"expires_at_ms": now_ms() - 1000}}
    )

    await refused(sessions, grant.refresh_token)


async def test_token_issued_with_a_lifetime_already_over_is_refused(database: AsyncIOMotorDatabase) -> None:
    sessions = SessionStore(database, ttl_seconds=-1)
    grant = await sessions.start("user-1")

    await refused(sessions, grant.refresh_token)


async def test_unexpired_token_of_a_short_lifetime_is_accepted(database: AsyncIOMotorDatabase) -> None:
    """The control for the two tests above: the expiry check is not refusing everything."""
    sessions = SessionStore(database, ttl_seconds=5)
    grant = await sessions.start("user-1")

    assert (await sessions.rotate(grant.refresh_token)).session_id == grant.session_id
