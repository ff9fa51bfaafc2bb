"""Every write history makes to a user's items raises that user's library generation in Redis
(tracked_items.py), and no one else's, over real Mongo (nx-27017), S3, RabbitMQ and Redis; a
Redis that refuses leaves the write done."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import SimpleNamespace

import pytest
from motor.motor_asyncio import AsyncIOMotorDatabase
from redis.asyncio import Redis
from structlog.testing import capture_logs

from facerestore_common.events import EventBus
from facerestore_common.library_generation import LibraryGenerations
from facerestore_common.storage import BlobStore
from history_service.consumer import HistoryProjector
from history_service.erase import UserEraser
from history_service.history import History
from history_service.items import ItemRepository
from history_service.library import Library, MetadataPatch
from history_service.preference import prefer
from history_service.tracked_items import tracked_items

ALICE = "user-alice"
BOB = "user-bob"
IMAGE = "alice-img"
BOBS_IMAGE = "bob-img"
RESULT_FIELDS = {
    "restored_key": f"restored/{IMAGE}/r2.png",
    "original_thumbnail_key": f"thumbnails/{IMAGE}.original.jpg",
    "restored_thumbnail_key": f"thumbnails/{IMAGE}/r2.restored.jpg",
    "faces": 1,
    "quality": {"backend": "classical"},
}


@asynccontextmanager
async def raises_generation_of(
    generations: LibraryGenerations, owner: str | None, forgotten: bool = False
) -> AsyncIterator[None]:
    """The block raises `owner`'s generation (None: nobody's), or with `forgotten` removes it, and
    leaves everyone else's as it was."""
    users = (ALICE, BOB)
    before = {user: await generations.current(user) for user in users}
    yield
    after = {user: await generations.current(user) for user in users}
    for user in users:
        if user == owner and forgotten:
            assert before[user] is not None and after[user] is None, f"{user}'s generation was not removed"
        elif user == owner:
            assert after[user] is not None and after[user] != before[user], f"{user}'s generation was not raised"
        else:
            assert after[user] == before[user], f"{user}'s generation was raised"


async def add_done_image(project: HistoryProjector, events: SimpleNamespace, image_id: str, user_id: str) -> None:
    await project(events.uploaded(image_id, user_id))
    await project(events.processing(image_id, user_id))
    await project(events.restored(image_id, user_id))


@pytest.fixture
async def library(history: History, blobs: BlobStore, bus: EventBus) -> Library:
    made = Library(history, blobs, bus)
    await made.create_indexes()
    return made


@pytest.fixture
async def images(project: HistoryProjector, events: SimpleNamespace) -> None:
    """A restored image of Alice's and one of Bob's."""
    await add_done_image(project, events, IMAGE, ALICE)
    await add_done_image(project, events, BOBS_IMAGE, BOB)


async def test_every_event_about_an_image_raises_its_owners_generation(
    project: HistoryProjector, events: SimpleNamespace, generations: LibraryGenerations
) -> None:
    for envelope in (
        events.uploaded(IMAGE, ALICE),
        events.processing(IMAGE, ALICE),
        events.restored(IMAGE, ALICE),
        events.failed("alice-failed", ALICE, "no-face"),
    ):
        async with raises_generation_of(generations, ALICE):
            await project(envelope)


@pytest.mark.usefixtures("images")
async def test_each_write_of_the_items_and_versions_raises_only_the_owners_generation(
    history: History, items: ItemRepository, generations: LibraryGenerations
) -> None:
    async with raises_generation_of(generations, ALICE):
        await items.record_upload("alice-new", ALICE, {"note": "fresh"})
    async with raises_generation_of(generations, ALICE):
        assert await items.advance("alice-new", ALICE, "processing", {}) is not None
    async with raises_generation_of(generations, ALICE):
        await items.versions.describe(IMAGE, "r2", {"model": "codeformer"}, 1_700_000_100_000)
    async with raises_generation_of(generations, ALICE):
        assert await items.versions.advance(IMAGE, "r2", "done", RESULT_FIELDS) is not None
    async with raises_generation_of(generations, ALICE):
        assert await items.versions.claim_faces(IMAGE, "r1", [{"box": [1, 2, 30, 40], "detection_score": 0.9}])
    async with raises_generation_of(generations, ALICE):
        assert (await prefer(history, ALICE, IMAGE, "r2")).preferred_restoration == "r2"
    async with raises_generation_of(generations, ALICE):
        await items.add_report(IMAGE)
    async with raises_generation_of(generations, ALICE):
        hidden = await items.set_under_review(IMAGE, True, "reported")
        assert hidden is not None and hidden.under_review
    async with raises_generation_of(generations, ALICE):
        assert await items.tombstone(IMAGE, "user") is not None
    async with raises_generation_of(generations, ALICE):
        assert await items.record_freed_bytes(IMAGE, 1234) == 1234
    async with raises_generation_of(generations, ALICE):
        await items.purged(IMAGE)


@pytest.mark.usefixtures("images")
async def test_a_write_that_matches_nothing_raises_nobodys_generation(
    items: ItemRepository, library: Library, generations: LibraryGenerations
) -> None:
    assert await library.delete_all(ALICE) == 1
    await library.wait_for_purge()
    async with raises_generation_of(generations, None):
        assert await library.delete_all(ALICE) == 0
        await library.wait_for_purge()
    async with raises_generation_of(generations, None):
        assert await items.set_under_review("no-such-image", True, "reported") is None
    item = await items.get(BOBS_IMAGE)
    assert item is not None
    version = item.version("r1")
    assert version is not None
    async with raises_generation_of(generations, None):
        # Alice asking for Bob's image: the filter names her, and matches nothing.
        assert await items.versions.prefer(BOBS_IMAGE, ALICE, version) is None
    assert await items.tombstone(BOBS_IMAGE, "user") is not None
    async with raises_generation_of(generations, None):
        assert await items.tombstone(BOBS_IMAGE, "user") is None


@pytest.mark.usefixtures("images")
async def test_the_librarys_edits_feedback_and_upkeep_raise_only_the_owners_generation(
    library: Library, database: AsyncIOMotorDatabase, generations: LibraryGenerations
) -> None:
    async with raises_generation_of(generations, ALICE):
        edited = await library.update(ALICE, IMAGE, MetadataPatch.parse(["beach"], "a note", "Lisbon"))
        assert edited.tags == ["beach"]
    async with raises_generation_of(generations, ALICE):
        assert (await library.give_feedback(ALICE, IMAGE, 4, "sharp"))["rating"] == 4

    # Upkeep after a crash, written behind the tracked collection's back as an older process did.
    raw = database["items"]
    await raw.update_one({"_id": IMAGE}, {"$set": {"index_stale": "token-of-a-crashed-edit"}})
    async with raises_generation_of(generations, ALICE):
        assert await library.sync_stale_index() == 1
    await raw.update_one({"_id": IMAGE}, {"$unset": {"search_words": ""}})
    async with raises_generation_of(generations, ALICE):
        assert await library.backfill_search_words() == 1
    await raw.update_one({"_id": IMAGE}, {"$unset": {"detected_faces": "", "faces_from": ""}})
    async with raises_generation_of(generations, ALICE):
        assert await library.backfill_detected_faces() == 1


@pytest.mark.usefixtures("images")
async def test_deleting_raises_only_the_owners_generation(
    history: History,
    library: Library,
    project: HistoryProjector,
    events: SimpleNamespace,
    generations: LibraryGenerations,
) -> None:
    async with raises_generation_of(generations, ALICE):
        await history.delete(IMAGE, owner_id=ALICE, deleted_by="user")
    await add_done_image(project, events, "alice-2", ALICE)
    await add_done_image(project, events, "alice-3", ALICE)
    async with raises_generation_of(generations, ALICE):
        assert await library.delete_all(ALICE) == 2
    # The purge that "delete all" started: each tombstone's measure and cleared mark.
    async with raises_generation_of(generations, ALICE):
        await library.wait_for_purge()
    assert await history.items.get(BOBS_IMAGE) is not None


@pytest.mark.usefixtures("images")
async def test_erasing_a_user_and_discarding_their_late_images_remove_only_their_generation(
    database: AsyncIOMotorDatabase,
    history: History,
    project: HistoryProjector,
    events: SimpleNamespace,
    generations: LibraryGenerations,
) -> None:
    eraser = UserEraser(database, history, "tracked-items-secret-0123456789")
    async with raises_generation_of(generations, ALICE, forgotten=True):
        assert await eraser.erase(ALICE) == 1
    await project(events.uploaded("alice-late", ALICE))
    async with raises_generation_of(generations, ALICE, forgotten=True):
        await eraser.discard_image("alice-late", [])
    assert await history.items.get("alice-late") is None


@pytest.mark.usefixtures("images")
async def test_a_write_by_any_other_filter_raises_the_owners_of_what_it_matched_before(
    history: History, library: Library, generations: LibraryGenerations
) -> None:
    await library.update(ALICE, IMAGE, MetadataPatch.parse(["holiday"], None, None))
    collection = history.items.collection
    # The update moves the item out of its own filter: its owner is found before it.
    async with raises_generation_of(generations, ALICE):
        result = await collection.update_many({"tags": "holiday"}, {"$set": {"tags": ["moved"]}})
        assert result.matched_count == 1
    async with raises_generation_of(generations, None):
        await collection.update_many({"tags": "holiday"}, {"$set": {"tags": ["again"]}})
    async with raises_generation_of(generations, BOB):
        await collection.delete_one({"note": "", "user_id": {"$in": [BOB]}})
    assert await history.items.get(BOBS_IMAGE) is None


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_a_redis_that_refuses_leaves_the_write_done_and_says_so(
    database: AsyncIOMotorDatabase, unique_name: str
) -> None:
    refusing = Redis(host="127.0.0.1", port=closed_port(), socket_connect_timeout=1.0, socket_timeout=1.0)
    items = ItemRepository(tracked_items(database, LibraryGenerations(refusing, unique_name)))
    try:
        with capture_logs() as logs:
            await items.record_upload(IMAGE, ALICE, {"note": "kept"})
            assert await items.tombstone(IMAGE, "user") is not None
    finally:
        await refusing.aclose()

    stored = await database["items"].find_one({"_id": IMAGE})
    assert stored is not None and stored["note"] == "kept" and stored["deleted"]
    warnings = [log for log in logs if log["event"] == "library_generation_not_raised"]
    assert len(warnings) == 2
    assert all(log["log_level"] == "warning" and "ConnectionError" in log["error"] for log in warnings)
