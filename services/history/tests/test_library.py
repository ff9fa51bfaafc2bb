"""The library over real Mongo (the nx-27017 stand-in), S3 and RabbitMQ: filters and their counts,
pages that stay put while images come and go, merge-patch edits that reach the face index,
feedback and its event, the result inline, and "delete all"."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import aio_pika
import numpy as np
import pytest
from motor.motor_asyncio import AsyncIOMotorDatabase

from facerestore.events.v1 import events_pb2
from facerestore_common.errors import Conflict, InvalidArgument, NotFound, Unprocessable
from facerestore_common.events import EventBus, new_envelope
from facerestore_common.storage import BlobStore
from history_service.consumer import HistoryProjector
from history_service.face_index import SearchFilters
from history_service.face_index.edge import EdgeFaceIndex
from history_service.history import History
from history_service.indexing import FaceIndexer
from history_service.library import Library, ListFilters, MetadataPatch, search_words, text_words

ALICE = "user-alice"
BOB = "user-bob"
BASE_MS = 1_700_000_000_000
MODEL = "test-model-v1"


@pytest.fixture
async def library(history: History, blobs: BlobStore, bus: EventBus, face_index: EdgeFaceIndex) -> Library:
    assert history.faces is not None
    indexer = FaceIndexer(history.items, history.faces, face_index)
    made = Library(history, blobs, bus, indexer, inline_max_bytes=64 * 1024)
    await made.create_indexes()
    return made


def restored_with_face(image_id: str, user_id: str, vector: list[float]) -> events_pb2.Envelope:
    event = events_pb2.ImageRestored(
        image_id=image_id,
        user_id=user_id,
        restored_key=f"restored/{image_id}.jpg",
        original_thumbnail_key=f"thumbnails/{image_id}-original.jpg",
        restored_thumbnail_key=f"thumbnails/{image_id}-restored.jpg",
        faces=1,
        backend="classical",
        restorer_model="classical-v2",
        analyzer_model=MODEL,
        sharpness_before=10.0,
        sharpness_after=30.0,
    )
    event.face_details.add(box=[1, 2, 30, 40], detection_score=0.9, embedding=vector)
    return new_envelope("inference", image_restored=event)


def unit(seed: int) -> list[float]:
    vector = np.random.default_rng(seed).normal(size=16)
    return (vector / np.linalg.norm(vector)).tolist()


async def read_one(amqp_url: str, queue: str, wait_seconds: float = 10.0) -> events_pb2.Envelope:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        source = await channel.get_queue(queue, ensure=True)
        deadline = time.monotonic() + wait_seconds
        while time.monotonic() < deadline:
            message = await source.get(no_ack=True, fail=False)
            if message is not None:
                return events_pb2.Envelope.FromString(message.body)
            await asyncio.sleep(0.05)
    raise AssertionError(f"nothing arrived on {queue}")


async def ids(library: Library, user_id: str, filters: ListFilters, limit: int = 100, cursor: str = "") -> list[str]:
    items, _ = await library.list(user_id, filters, limit, cursor)
    return [item.id for item in items]


# --- words -----------------------------------------------------------------------------------------


def test_words_are_case_folded_split_at_spaces_and_punctuation_and_keep_emoji_sequences() -> None:
    assert text_words("Grandma's LAKE, 1990 — Straße 🧑\u200d🚀!") == [
        "grandma",
        "s",
        "lake",
        "1990",
        "strasse",
        "🧑\u200d🚀",
    ]
    assert search_words(["grand-ma 1990", "family"], "At the lake.") == [
        "1990",
        "at",
        "family",
        "grand",
        "lake",
        "ma",
        "the",
    ]


# --- filters ---------------------------------------------------------------------------------------


async def test_each_filter_keeps_only_matching_images_and_they_combine(
    project: HistoryProjector, library: Library, events: SimpleNamespace
) -> None:
    photos = {
        "lake": (1, ("family", "summer"), "Grandma at the lake", "Konstanz"),
        "beach": (2, ("summer",), "Beach day with Tom", "Lisbon"),
        "wedding": (3, ("family", "wedding"), "Tom and Anna's wedding", "Lisbon"),
        "school": (4, ("school",), "First day", ""),
    }
    for name, (offset, tags, note, location) in photos.items():
        await project(
            events.uploaded(name, ALICE, created_at_ms=BASE_MS + offset * 1000, tags=tags, note=note, location=location)
        )
    await project(events.uploaded("bob-lake", BOB, created_at_ms=BASE_MS, tags=("family",), note="lake"))
    await project(events.restored("beach", ALICE))
    await project(events.failed("school", ALICE, "undecodable"))
    await project(events.processing("wedding", ALICE))

    assert await ids(library, ALICE, ListFilters.parse()) == ["school", "wedding", "beach", "lake"]
    assert await ids(library, ALICE, ListFilters.parse(statuses=["done", "failed"])) == ["school", "beach"]
    assert await ids(library, ALICE, ListFilters.parse(tags=["wedding", "SCHOOL "])) == ["school", "wedding"]
    assert await ids(library, ALICE, ListFilters.parse(created_from_ms=BASE_MS + 2000)) == [
        "school",
        "wedding",
        "beach",
    ]
    assert await ids(library, ALICE, ListFilters.parse(created_to_ms=BASE_MS + 2000)) == ["beach", "lake"]
    window = ListFilters.parse(created_from_ms=BASE_MS + 2000, created_to_ms=BASE_MS + 3000)
    assert await ids(library, ALICE, window) == ["wedding", "beach"]
    assert await ids(library, ALICE, ListFilters.parse(location=" Lisbon ")) == ["wedding", "beach"]
    # q: every word in the note or the tags, whatever the case.
    assert await ids(library, ALICE, ListFilters.parse(query="tom")) == ["wedding", "beach"]
    assert await ids(library, ALICE, ListFilters.parse(query="TOM family")) == ["wedding"]
    assert await ids(library, ALICE, ListFilters.parse(query="summer lake")) == ["lake"]
    assert await ids(library, ALICE, ListFilters.parse(query="lake", location="Lisbon")) == []
    combined = ListFilters.parse(statuses=["queued", "processing"], tags=["family"], location="Lisbon")
    assert await ids(library, ALICE, combined) == ["wedding"]
    # Bob's image matches "family" and "lake" but is never Alice's.
    assert "bob-lake" not in await ids(library, ALICE, ListFilters.parse(tags=["family"], query="lake"))


async def test_counts_per_status_follow_every_filter_but_the_status_one(
    project: HistoryProjector, library: Library, events: SimpleNamespace
) -> None:
    for index in range(5):
        await project(
            events.uploaded(f"img-{index}", ALICE, created_at_ms=BASE_MS + index, tags=("a" if index < 4 else "b",))
        )
    await project(events.restored("img-0", ALICE))
    await project(events.restored("img-1", ALICE))
    await project(events.failed("img-2", ALICE, "undecodable"))
    await project(events.restored("img-4", ALICE))

    counts = await library.counts(ALICE, ListFilters.parse(statuses=["failed"], tags=["a"]))

    assert counts == {"queued": 1, "processing": 0, "done": 2, "failed": 1}
    assert await library.counts(BOB, ListFilters.parse()) == {"queued": 0, "processing": 0, "done": 0, "failed": 0}


async def test_bad_filters_are_refused() -> None:
    for bad in (
        {"statuses": ["lost"]},
        {"created_from_ms": BASE_MS + 1, "created_to_ms": BASE_MS},
        {"tags": [f"t{index}" for index in range(11)]},
        {"query": " ".join(f"w{index}" for index in range(11))},
    ):
        with pytest.raises(InvalidArgument) as refused:
            ListFilters.parse(**bad)  # type: ignore[arg-type]
        assert refused.value.reason == "invalid-filter"


async def test_the_next_page_follows_exactly_while_images_are_added_and_deleted(
    project: HistoryProjector, library: Library, history: History, events: SimpleNamespace
) -> None:
    for index in range(6):
        await project(events.uploaded(f"img-{index}", ALICE, created_at_ms=BASE_MS + index * 1000))
    first, cursor = await library.list(ALICE, ListFilters(), 2, "")
    assert [item.id for item in first] == ["img-5", "img-4"]

    # Meanwhile: a newer upload, the last image seen and the next one to come are deleted.
    await project(events.uploaded("img-new", ALICE, created_at_ms=BASE_MS + 60_000))
    await history.delete("img-4", owner_id=ALICE, deleted_by="user")
    await history.delete("img-3", owner_id=ALICE, deleted_by="user")

    second, cursor = await library.list(ALICE, ListFilters(), 2, cursor)
    third, cursor = await library.list(ALICE, ListFilters(), 2, cursor)

    assert [item.id for item in second] == ["img-2", "img-1"]
    assert [item.id for item in third] == ["img-0"]
    assert cursor == ""


# --- edits -----------------------------------------------------------------------------------------


async def test_a_merge_patch_changes_only_the_fields_sent_and_q_finds_the_new_words(
    project: HistoryProjector, library: Library, history: History, events: SimpleNamespace
) -> None:
    await project(events.uploaded("img", ALICE, tags=("old",), note="first words", location="Porto"))

    edited = await library.update(ALICE, "img", MetadataPatch.parse(None, "Ground control 🧑\u200d🚀", None))

    assert (edited.tags, edited.note, edited.location) == (["old"], "Ground control 🧑\u200d🚀", "Porto")
    assert await ids(library, ALICE, ListFilters.parse(query="control")) == ["img"]
    assert await ids(library, ALICE, ListFilters.parse(query="first")) == []

    cleared = await library.update(ALICE, "img", MetadataPatch.parse(["New", "new ", "Two"], None, ""))

    assert (cleared.tags, cleared.note, cleared.location) == (["new", "two"], "Ground control 🧑\u200d🚀", "")
    assert (await history.get_own(ALICE, "img")).tags == ["new", "two"]


async def test_edits_follow_the_upload_rules_and_another_users_image_looks_missing(
    project: HistoryProjector, library: Library, events: SimpleNamespace
) -> None:
    await project(events.uploaded("img", ALICE))

    for tags, note, location in ((["a/b"], None, None), (None, "bell\x07", None), (None, None, "two\nlines")):
        with pytest.raises(InvalidArgument) as refused:
            await library.update(ALICE, "img", MetadataPatch.parse(tags, note, location))
        assert refused.value.reason == "invalid-metadata"
    with pytest.raises(NotFound):
        await library.update(BOB, "img", MetadataPatch.parse(["mine"], None, None))


async def test_editing_tags_and_location_changes_what_face_search_filters_on(
    project: HistoryProjector, library: Library, events: SimpleNamespace, face_index: EdgeFaceIndex
) -> None:
    await project(events.uploaded("img", ALICE, tags=("before",), location="Porto"))
    await project(restored_with_face("img", ALICE, unit(1)))

    async def found(tags: tuple[str, ...] = (), location: str | None = None) -> bool:
        hits = await face_index.search(unit(1), MODEL, 5, SearchFilters(location=location, tags=tags), ALICE)
        return [hit.image_id for hit in hits] == ["img"]

    assert await found(tags=("before",)) and await found(location="Porto")

    await library.update(ALICE, "img", MetadataPatch.parse(["after"], None, "Lisbon"))

    assert await found(tags=("after",)) and await found(location="Lisbon")
    assert not await found(tags=("before",)) and not await found(location="Porto")


async def test_an_edit_whose_index_update_was_lost_is_finished_by_the_maintenance_pass(
    project: HistoryProjector,
    library: Library,
    database: AsyncIOMotorDatabase,
    events: SimpleNamespace,
    face_index: EdgeFaceIndex,
) -> None:
    await project(events.uploaded("img", ALICE, tags=("before",)))
    await project(restored_with_face("img", ALICE, unit(2)))
    # As a crash between the two writes leaves it: the item edited and marked, the index not.
    await database["items"].update_one({"_id": "img"}, {"$set": {"tags": ["after"], "index_stale": "t-1"}})

    assert await library.sync_stale_index() == 1

    hits = await face_index.search(unit(2), MODEL, 5, SearchFilters(tags=("after",)), ALICE)
    assert [hit.image_id for hit in hits] == ["img"]
    assert await database["items"].count_documents({"index_stale": {"$exists": True}}) == 0


# --- feedback --------------------------------------------------------------------------------------


async def test_feedback_is_kept_on_the_item_replaced_by_a_new_one_and_published(
    project: HistoryProjector, library: Library, history: History, bus: EventBus, amqp_url: str, events: SimpleNamespace
) -> None:
    await bus.declare_queue("probe", ["feedback.given"])
    await project(events.uploaded("img", ALICE))
    await project(restored_with_face("img", ALICE, unit(3)))

    await library.give_feedback(ALICE, "img", 2, "blurry")
    first = await read_one(amqp_url, bus.queue_name("probe"))
    await library.give_feedback(ALICE, "img", 5, "")
    second = await read_one(amqp_url, bus.queue_name("probe"))

    item = await history.get_own(ALICE, "img")
    assert item.feedback["rating"] == 5 and item.feedback["comment"] == ""
    assert first.feedback_given.rating == 2 and first.feedback_given.has_comment
    assert first.feedback_given.previous_rating == 0
    assert first.feedback_given.restorer_model == "classical-v2"
    assert first.feedback_given.analyzer_model == MODEL
    assert second.feedback_given.rating == 5 and second.feedback_given.previous_rating == 2
    assert not second.feedback_given.has_comment


async def test_feedback_needs_a_restored_own_image_and_a_rating_of_one_to_five(
    project: HistoryProjector, library: Library, events: SimpleNamespace
) -> None:
    await project(events.uploaded("queued", ALICE))
    await project(events.uploaded("done", ALICE))
    await project(events.restored("done", ALICE))

    with pytest.raises(Conflict) as refused:
        await library.give_feedback(ALICE, "queued", 4, "")
    assert refused.value.reason == "not-restored"
    with pytest.raises(NotFound):
        await library.give_feedback(BOB, "done", 4, "")
    for rating in (0, 6):
        with pytest.raises(InvalidArgument):
            await library.give_feedback(ALICE, "done", rating, "")


# --- inline result ---------------------------------------------------------------------------------


async def test_the_restored_image_inline_is_the_stored_bytes_and_only_when_there_is_one(
    project: HistoryProjector, library: Library, history: History, blobs: BlobStore, events: SimpleNamespace
) -> None:
    await project(events.uploaded("img", ALICE))
    queued = await history.get_own(ALICE, "img")
    assert await library.restored_content(queued) == b""
    result = events.restored("img", ALICE)
    await project(result)
    await blobs.put(result.image_restored.restored_key, b"\xff\xd8restored-bytes", "image/jpeg")

    assert await library.restored_content(await history.get_own(ALICE, "img")) == b"\xff\xd8restored-bytes"

    await blobs.put(result.image_restored.restored_key, b"x" * (64 * 1024 + 1), "image/jpeg")
    with pytest.raises(Unprocessable) as refused:
        await library.restored_content(await history.get_own(ALICE, "img"))
    assert refused.value.reason == "inline-too-large"


# --- delete all ------------------------------------------------------------------------------------


async def test_delete_all_empties_the_list_at_once_then_removes_every_file_and_announces_each(
    project: HistoryProjector,
    library: Library,
    blobs: BlobStore,
    bus: EventBus,
    amqp_url: str,
    events: SimpleNamespace,
    store_renditions: object,
) -> None:
    await bus.declare_queue("probe", ["image.deleted"])
    keys: list[str] = []
    sizes: dict[str, int] = {}
    for index in range(3):
        upload = events.uploaded(f"img-{index}", ALICE, created_at_ms=BASE_MS + index)
        result = events.restored(f"img-{index}", ALICE)
        await project(upload)
        await project(result)
        contents: dict[str, bytes] = await store_renditions(upload, result)  # type: ignore[operator]
        keys.extend(contents)
        sizes[f"img-{index}"] = sum(len(data) for data in contents.values())
    await project(events.uploaded("bob-1", BOB))

    assert await library.delete_all(ALICE) == 3
    assert await ids(library, ALICE, ListFilters()) == []

    # A second purge racing the one delete_all started (another replica's maintenance pass).
    await asyncio.gather(library.purge_pending(), library.wait_for_purge())
    for key in keys:
        assert not await blobs.exists(key), key
    announced: dict[str, set[str]] = {}
    freed: dict[str, set[int]] = {}
    while len(announced) < 3:
        envelope = await read_one(amqp_url, bus.queue_name("probe"))
        announced.setdefault(envelope.image_deleted.image_id, set()).add(envelope.event_id)
        freed.setdefault(envelope.image_deleted.image_id, set()).add(envelope.image_deleted.freed_bytes)
    assert sorted(announced) == ["img-0", "img-1", "img-2"]
    # Whichever purge published it, each says what its image's files took before either removed one.
    assert freed == {image_id: {size} for image_id, size in sizes.items()}
    # Published twice or not, each deletion has one event id, which consumers act on once.
    assert all(len(event_ids) == 1 for event_ids in announced.values())
    assert await ids(library, BOB, ListFilters()) == ["bob-1"]
    assert await library.purge_pending() == 0
