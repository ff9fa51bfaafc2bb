"""Erasing a user (user.deleted) over real Mongo (nx-27017), S3 (localbucket) and RabbitMQ:
nothing of theirs is left in any collection, the bucket or the face index, another user's data
is untouched, doing it again is harmless, and events about their images that arrive later are
discarded with the files they name."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
from motor.motor_asyncio import AsyncIOMotorDatabase

from facerestore.events.v1 import events_pb2
from facerestore_common.events import new_envelope
from facerestore_common.library_generation import LibraryGenerations
from facerestore_common.pseudonym import pseudonym
from facerestore_common.storage import BlobStore
from history_service.consumer import HistoryProjector
from history_service.erase import UserEraser
from history_service.exports import ExportJobs, ExportLinks, Exports, archive_key
from history_service.face_index import SearchFilters
from history_service.face_index.edge import EdgeFaceIndex
from history_service.history import History
from history_service.indexing import FaceIndexer

ALICE = "user-alice-6f1d"
BOB = "user-bob-2a9c"
SECRET = "erase-tests-pseudonym-secret"
MODEL = "test-model-v1"


@pytest.fixture
async def eraser(
    database: AsyncIOMotorDatabase, history: History, blobs: BlobStore, face_index: EdgeFaceIndex
) -> UserEraser:
    assert history.faces is not None
    jobs = ExportJobs(database)
    exports = Exports(jobs, blobs, ExportLinks("erase-tests-link-secret-0123456789", 600))
    return UserEraser(
        database,
        history,
        SECRET,
        exports=exports,
        indexer=FaceIndexer(history.items, history.faces, face_index),
        batch=3,
    )


def restored_with_face(image_id: str, user_id: str, seed: int) -> events_pb2.Envelope:
    vector = np.random.default_rng(seed).normal(size=16)
    event = events_pb2.ImageRestored(
        image_id=image_id,
        user_id=user_id,
        restored_key=f"restored/{image_id}.jpg",
        original_thumbnail_key=f"thumbnails/{image_id}-original.jpg",
        restored_thumbnail_key=f"thumbnails/{image_id}-restored.jpg",
        faces=1,
        backend="classical",
        analyzer_model=MODEL,
    )
    event.face_details.add(box=[1, 2, 3, 4], detection_score=0.9, embedding=(vector / np.linalg.norm(vector)).tolist())
    return new_envelope("inference", image_restored=event)


async def add_user_data(
    project: HistoryProjector, events: SimpleNamespace, blobs: BlobStore, history: History, user_id: str, count: int
) -> list[str]:
    """Images (restored, with faces and feedback), a deleted one (a tombstone), an export with its
    archive and an activity record waiting for the relay; returns every stored key."""
    keys: list[str] = []
    for index in range(count):
        image_id = f"{user_id}-img-{index}"
        upload = events.uploaded(image_id, user_id, tags=("family",), note=f"about {user_id}")
        result = restored_with_face(image_id, user_id, index)
        await project(upload)
        await project(result)
        for key in (
            upload.image_uploaded.original_key,
            result.image_restored.restored_key,
            result.image_restored.original_thumbnail_key,
            result.image_restored.restored_thumbnail_key,
        ):
            await blobs.put(key, key.encode(), "image/jpeg")
            keys.append(key)
    await history.items._items.update_one(  # type: ignore[attr-defined]
        {"_id": f"{user_id}-img-0"}, {"$set": {"feedback": {"rating": 3, "comment": "ok", "given_at_ms": 1}}}
    )
    await history.delete(f"{user_id}-img-1", owner_id=user_id, deleted_by="user")
    return keys


async def documents_mentioning(database: AsyncIOMotorDatabase, text: str) -> list[str]:
    found = []
    for name in await database.list_collection_names():
        async for document in database[name].find({}):
            if text in json.dumps(document, default=str):
                found.append(f"{name}: {document['_id']}")
    return found


async def test_erasing_leaves_nothing_of_the_user_and_everything_of_another(
    project: HistoryProjector,
    events: SimpleNamespace,
    blobs: BlobStore,
    history: History,
    database: AsyncIOMotorDatabase,
    face_index: EdgeFaceIndex,
    eraser: UserEraser,
    generations: LibraryGenerations,
) -> None:
    alice_keys = await add_user_data(project, events, blobs, history, ALICE, 5)
    bob_keys = await add_user_data(project, events, blobs, history, BOB, 2)
    jobs = ExportJobs(database)
    export = await jobs.create(ALICE)
    await blobs.put(archive_key(export.id), b"PK archive of alice", "application/zip")
    await database["activity_outbox"].insert_one({"_id": "rec-1", "kind": "search.made", "user_id": ALICE})
    assert await documents_mentioning(database, ALICE)

    assert await eraser.erase(ALICE) == 5

    assert await documents_mentioning(database, ALICE) == []
    for key in alice_keys:
        assert not await blobs.exists(key), key
    assert not await blobs.exists(archive_key(export.id))
    for seed in range(5):
        vector = restored_with_face("x", ALICE, seed).image_restored.face_details[0].embedding
        hits = await face_index.search(list(vector), MODEL, 10, SearchFilters(), None)
        assert all(hit.user_id != ALICE for hit in hits)
    # What is kept: that a user was erased, under a pseudonym nobody can link back without the key.
    marker = await database["erased_users"].find_one({"_id": pseudonym(SECRET, ALICE)})
    assert marker is not None and marker["state"] == "done" and marker["images_erased"] == 5
    # Nor does a key in Redis name her (her library generation, which the page cache read).
    assert await generations.current(ALICE) is None
    assert await generations.current(BOB) is not None
    # Bob is untouched.
    assert [item.id for item in (await history.items.list(10, "", BOB))[0]] == [f"{BOB}-img-0"]
    for key in bob_keys:
        # All but those of the image Bob deleted himself.
        assert await blobs.exists(key) is (f"{BOB}-img-1" not in key), key
    assert (
        len(
            await face_index.search(
                list(restored_with_face("x", BOB, 0).image_restored.face_details[0].embedding),
                MODEL,
                10,
                SearchFilters(),
                BOB,
            )
        )
        == 1
    )

    # Again (a redelivered event): nothing more to do, nothing breaks.
    assert await eraser.erase(ALICE) == 0


async def test_events_about_an_erased_users_images_that_arrive_later_are_discarded_with_their_files(
    project: HistoryProjector,
    events: SimpleNamespace,
    blobs: BlobStore,
    history: History,
    database: AsyncIOMotorDatabase,
    eraser: UserEraser,
    generations: LibraryGenerations,
) -> None:
    projector = HistoryProjector(history, eraser=eraser)
    await eraser.erase(ALICE)
    # An upload and its result that were in flight when the account was erased.
    upload = events.uploaded("late-img", ALICE)
    result = restored_with_face("late-img", ALICE, 7)
    named = [upload.image_uploaded.original_key, result.image_restored.restored_key]
    for key in named:
        await blobs.put(key, b"late", "image/jpeg")

    await projector(upload)
    await projector(result)

    assert await documents_mentioning(database, ALICE) == []
    assert await history.items.get("late-img") is None
    assert await generations.current(ALICE) is None
    for key in named:
        assert not await blobs.exists(key), key
    # Another user's events go on as ever.
    await projector(events.uploaded("bob-img", BOB))
    assert (await history.get_own(BOB, "bob-img")).id == "bob-img"
