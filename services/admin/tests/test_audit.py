"""The audit log over a real Mongo database: every moderation action is kept with who did it,
to what, why and when, and counted."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from motor.motor_asyncio import AsyncIOMotorDatabase

from admin_service.audit import AuditLog
from facerestore_common import mongo
from facerestore_common.timeutil import now_ms


@pytest.fixture
async def database(mongo_url: str, unique_name: str) -> AsyncIterator[AsyncIOMotorDatabase]:
    db = mongo.connect(mongo_url, unique_name)
    yield db
    db.client.close()


@pytest.fixture
async def audit(database: AsyncIOMotorDatabase) -> AuditLog:
    log = AuditLog(database)
    await log.create_indexes()
    return log


async def test_an_empty_audit_log_counts_zero(audit: AuditLog) -> None:
    assert await audit.count() == 0


async def test_record_keeps_actor_action_target_details_and_time(
    audit: AuditLog, database: AsyncIOMotorDatabase
) -> None:
    before = now_ms()
    await audit.record("admin-7", "image.delete", "img-42", owner_id="user-3", reason="not a face")
    after = now_ms()

    entries = await database["audit_log"].find({}).to_list(None)
    assert len(entries) == 1
    entry = entries[0]
    assert entry["actor_id"] == "admin-7"
    assert entry["action"] == "image.delete"
    assert entry["target"] == "img-42"
    assert entry["details"] == {"owner_id": "user-3", "reason": "not a face"}
    assert before <= entry["at_ms"] <= after
    assert isinstance(entry["_id"], str) and entry["_id"]


async def test_record_without_details_stores_an_empty_mapping(audit: AuditLog, database: AsyncIOMotorDatabase) -> None:
    await audit.record("admin-7", "user.promote", "user-9")

    entry = await database["audit_log"].find_one({"target": "user-9"})
    assert entry is not None
    assert entry["details"] == {}


async def test_every_action_is_a_separate_entry_and_counted(audit: AuditLog, database: AsyncIOMotorDatabase) -> None:
    # The same action twice is two facts, not one.
    await audit.record("admin-1", "image.delete", "img-1", reason="spam")
    await audit.record("admin-1", "image.delete", "img-1", reason="spam")
    await audit.record("admin-2", "image.delete", "img-2", reason="abuse")

    assert await audit.count() == 3
    entries = await database["audit_log"].find({}).sort("at_ms", 1).to_list(None)
    assert len({entry["_id"] for entry in entries}) == 3
    assert sorted((e["actor_id"], e["target"], e["details"]["reason"]) for e in entries) == [
        ("admin-1", "img-1", "spam"),
        ("admin-1", "img-1", "spam"),
        ("admin-2", "img-2", "abuse"),
    ]


async def test_audit_logs_in_different_databases_do_not_mix(audit: AuditLog, mongo_url: str, unique_name: str) -> None:
    other_db = mongo.connect(mongo_url, f"{unique_name}-other")
    try:
        other = AuditLog(other_db)
        await other.record("admin-1", "image.delete", "img-1")
        await audit.record("admin-1", "image.delete", "img-1")
        await audit.record("admin-1", "image.delete", "img-2")

        assert await other.count() == 1
        assert await audit.count() == 2
    finally:
        other_db.client.close()
