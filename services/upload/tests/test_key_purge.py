"""Expired Idempotency-Key claims are removed in the background, of uploads and of versions
alike; claims still within their lifetime, and what they point at, stay."""

from __future__ import annotations

import asyncio
import contextlib

from motor.motor_asyncio import AsyncIOMotorDatabase

from facerestore_common.timeutil import now_ms
from upload_service.idempotency import KEY_LIFETIME_MS, RESTORATION_KEYS, UPLOAD_KEYS, IdempotencyKeys
from upload_service.key_purge import purge_expired_keys_forever


async def claim(keys: IdempotencyKeys, owner: str, key: str, age_ms: int, database: AsyncIOMotorDatabase) -> None:
    await keys.claim(owner, key, f"fingerprint-{key}", f"record-{key}")
    collection = UPLOAD_KEYS if keys.subject == "upload" else RESTORATION_KEYS
    await database[collection].update_one({"_id": f"{owner}:{key}"}, {"$set": {"created_at_ms": now_ms() - age_ms}})


async def test_claims_past_their_lifetime_are_purged_and_younger_ones_stay(database: AsyncIOMotorDatabase) -> None:
    uploads = IdempotencyKeys(database)
    await uploads.create_indexes()
    await claim(uploads, "user-1", "old", KEY_LIFETIME_MS + 60_000, database)
    await claim(uploads, "user-1", "almost-a-day", KEY_LIFETIME_MS - 60_000, database)
    await claim(uploads, "user-2", "new", 0, database)

    assert await uploads.purge_expired() == 1

    assert sorted(doc["_id"] for doc in await database[UPLOAD_KEYS].find().to_list(None)) == [
        "user-1:almost-a-day",
        "user-2:new",
    ]
    # A kept claim still answers its retry with its record.
    replay = await uploads.claim("user-1", "almost-a-day", "fingerprint-almost-a-day", "another-record")
    assert (replay.record_id, replay.replayed) == ("record-almost-a-day", True)
    assert await uploads.purge_expired() == 0


async def test_the_background_purge_covers_uploads_and_versions(database: AsyncIOMotorDatabase) -> None:
    uploads, versions = IdempotencyKeys(database), IdempotencyKeys.for_restorations(database)
    await claim(uploads, "user-1", "old-upload", KEY_LIFETIME_MS + 1, database)
    await claim(versions, "user-1:image-1", "old-version", KEY_LIFETIME_MS + 1, database)
    await claim(versions, "user-1:image-1", "new-version", 0, database)

    purging = asyncio.create_task(purge_expired_keys_forever((uploads, versions), interval_seconds=0.05))
    try:
        for _ in range(600):  # up to 30 s
            left = (
                await database[UPLOAD_KEYS].count_documents({}),
                await database[RESTORATION_KEYS].count_documents({}),
            )
            if left == (0, 1):
                break
            await asyncio.sleep(0.05)
    finally:
        purging.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await purging

    assert await database[UPLOAD_KEYS].count_documents({}) == 0
    assert [doc["_id"] for doc in await database[RESTORATION_KEYS].find().to_list(None)] == [
        "user-1:image-1:new-version"
    ]
