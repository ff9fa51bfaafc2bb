"""An erased user in the audit log, over a real Mongo database: wherever their id stood (the
actor, the target, the owner of what was acted on) it becomes their pseudonym, the same in every
entry; everything else in the entries, and other users' entries, stay as they were."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from motor.motor_asyncio import AsyncIOMotorDatabase

from admin_service.audit import AuditLog
from admin_service.erasure import AuditErasure, ErasingHandler
from facerestore.events.v1 import events_pb2
from facerestore_common import mongo
from facerestore_common.events import new_envelope
from facerestore_common.pseudonym import pseudonym

SECRET = "admin-erasure-tests-pseudonym-secret"
ERASED = "user-erased-3f9a"


@pytest.fixture
async def database(mongo_url: str, unique_name: str) -> AsyncIterator[AsyncIOMotorDatabase]:
    db = mongo.connect(mongo_url, unique_name)
    yield db
    db.client.close()


async def test_user_deleted_turns_the_users_id_into_their_pseudonym_everywhere_in_the_audit_log(
    database: AsyncIOMotorDatabase,
) -> None:
    audit = AuditLog(database)
    await audit.create_indexes()
    await audit.record("admin-1", "image.delete", "img-1", owner_id=ERASED, reason="not a face")
    await audit.record("admin-1", "user.ban", ERASED, reason="spam")
    await audit.record(ERASED, "image.delete", "img-2", owner_id="user-other", reason="as an admin")
    await audit.record("admin-1", "image.delete", "img-3", owner_id="user-other", reason="other")
    passed_on: list[str] = []

    async def rest(envelope: events_pb2.Envelope) -> None:
        passed_on.append(envelope.type)

    handler = ErasingHandler(rest, AuditErasure(database, SECRET))
    deleted = new_envelope("auth", user_deleted=events_pb2.UserDeleted(user_id=ERASED))
    await handler(deleted)
    await handler(deleted)

    entries = {entry["details"]["reason"]: entry async for entry in database["audit_log"].find({})}
    name = pseudonym(SECRET, ERASED)
    assert name.startswith("erased-") and ERASED not in name
    assert entries["not a face"]["details"]["owner_id"] == name and entries["not a face"]["target"] == "img-1"
    assert entries["spam"]["target"] == name and entries["spam"]["action"] == "user.ban"
    assert entries["as an admin"]["actor_id"] == name
    assert entries["as an admin"]["details"]["owner_id"] == "user-other"
    assert entries["other"]["details"]["owner_id"] == "user-other"
    assert not any(ERASED in str(entry) for entry in entries.values())
    assert passed_on == ["user.deleted", "user.deleted"]
