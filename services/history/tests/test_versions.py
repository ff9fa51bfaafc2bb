"""Versions of an image over real Mongo (nx-27017), S3 (localbucket) and RabbitMQ: the upload's
own "r1" and every reprocess, advanced by the events that name them; the item shows its
preferred version (its links, inline bytes and export follow); faces with boxes, stored and
indexed once; every version's files go with the image."""

from __future__ import annotations

import asyncio
import time

import aio_pika
import pytest
from minio import Minio
from motor.motor_asyncio import AsyncIOMotorDatabase

from facerestore.events.v1 import events_pb2
from facerestore_common.errors import Conflict, NotFound
from facerestore_common.events import EventBus, new_envelope
from facerestore_common.settings import StorageSettings
from facerestore_common.storage import BlobStore
from history_service.consumer import HistoryProjector
from history_service.erase import UserEraser
from history_service.exports import ExportSource
from history_service.face_index.edge import EdgeFaceIndex
from history_service.faces import FaceRepository
from history_service.grpc_api import HistoryApi
from history_service.history import History
from history_service.indexing import FaceIndexer
from history_service.library import Library
from history_service.preference import prefer

ALICE = "user-alice"
BOB = "user-bob"
IMAGE = "img-1"
BASE_MS = 1_700_000_000_000
MODEL = "test-analyzer-v1"
GFPGAN = events_pb2.RestorationOptions(model="gfpgan", upscale=1)
CODEFORMER = events_pb2.RestorationOptions(model="codeformer", fidelity=0.7, faces=[1], upscale=2)
# Two faces of the original, as the analyser found them (boxes in original pixels).
FACES = [([10, 20, 110, 140], 0.98, [1.0, 0.0, 0.0]), ([200, 30, 290, 150], 0.91, [0.0, 1.0, 0.0])]


@pytest.fixture
async def library(history: History, blobs: BlobStore, bus: EventBus) -> Library:
    assert history.faces is not None and history.face_index is not None
    made = Library(history, blobs, bus, FaceIndexer(history.items, history.faces, history.face_index))
    await made.create_indexes()
    return made


@pytest.fixture
def api(history: History, library: Library) -> HistoryApi:
    return HistoryApi(history, library=library)


def uploaded(options: events_pb2.RestorationOptions | None = GFPGAN, image_id: str = IMAGE) -> events_pb2.Envelope:
    event = events_pb2.ImageUploaded(
        image_id=image_id,
        user_id=ALICE,
        original_key=f"originals/{image_id}.jpg",
        content_type="image/jpeg",
        width=320,
        height=200,
        restoration_id="r1" if options is not None else "",
    )
    if options is not None:
        event.options.CopyFrom(options)
    event.created_at.FromMilliseconds(BASE_MS)
    return new_envelope("upload", image_uploaded=event)


def requested(
    restoration_id: str, options: events_pb2.RestorationOptions = CODEFORMER, image_id: str = IMAGE
) -> events_pb2.Envelope:
    event = events_pb2.RestorationRequested(
        image_id=image_id,
        user_id=ALICE,
        restoration_id=restoration_id,
        original_key=f"originals/{image_id}.jpg",
        options=options,
    )
    event.requested_at.FromMilliseconds(BASE_MS + 60_000)
    return new_envelope("upload", restoration_requested=event)


def processing(restoration_id: str, image_id: str = IMAGE) -> events_pb2.Envelope:
    return new_envelope(
        "inference",
        image_processing=events_pb2.ImageProcessing(image_id=image_id, user_id=ALICE, restoration_id=restoration_id),
    )


def restored(
    restoration_id: str,
    identity: tuple[float, float],
    sharpness_after: float,
    options: events_pb2.RestorationOptions | None = None,
    image_id: str = IMAGE,
    embedding_shift: float = 0.0,
) -> events_pb2.Envelope:
    """A version's result; "r1" (or "") keeps today's keys, others their own."""
    first = restoration_id in ("", "r1")
    event = events_pb2.ImageRestored(
        image_id=image_id,
        user_id=ALICE,
        restored_key=f"restored/{image_id}.jpg" if first else f"restored/{image_id}/{restoration_id}.jpg",
        original_thumbnail_key=f"thumbnails/{image_id}-original.jpg",
        restored_thumbnail_key=(
            f"thumbnails/{image_id}-restored.jpg" if first else f"thumbnails/{image_id}/{restoration_id}-restored.jpg"
        ),
        faces=len(FACES),
        backend=(options or GFPGAN).model,
        restorer_model=f"{(options or GFPGAN).model}-weights",
        analyzer_model=MODEL,
        sharpness_before=10.0,
        sharpness_after=sharpness_after,
        identity_min=min(identity),
        identity_mean=sum(identity) / 2,
        restoration_id=restoration_id,
        warnings=["face-index-out-of-range"] if not first else [],
    )
    if options is not None:
        event.options.CopyFrom(options)
    for (box, score, vector), similarity in zip(FACES, identity, strict=True):
        event.face_details.add(
            box=box,
            detection_score=score,
            embedding=[value + embedding_shift for value in vector],
            identity_similarity=similarity,
        )
    return new_envelope("inference", image_restored=event)


def failed(restoration_id: str, reason: str) -> events_pb2.Envelope:
    return new_envelope(
        "inference",
        image_failed=events_pb2.ImageFailed(
            image_id=IMAGE, user_id=ALICE, reason=reason, restoration_id=restoration_id, options=CODEFORMER
        ),
    )


async def store_results(blobs: BlobStore, *envelopes: events_pb2.Envelope) -> dict[str, bytes]:
    """Put the original and each result's files in the bucket, each with bytes of its own."""
    contents = {f"originals/{IMAGE}.jpg": b"original"}
    for envelope in envelopes:
        result = envelope.image_restored
        for key in (result.restored_key, result.original_thumbnail_key, result.restored_thumbnail_key):
            contents[key] = f"bytes of {key}".encode()
    for key, data in contents.items():
        await blobs.put(key, data, "image/jpeg")
    return contents


async def test_an_upload_lists_its_own_version_r1_with_the_options_asked_for_and_prefers_it(
    project: HistoryProjector, history: History, api: HistoryApi
) -> None:
    await project(uploaded(CODEFORMER))

    message = api._message(await history.get_own(ALICE, IMAGE))

    assert message.preferred_restoration == "r1"
    [first] = message.restorations
    assert (first.id, first.status) == ("r1", "queued")
    assert first.options == events_pb2.RestorationOptions(model="codeformer", fidelity=0.7, faces=[1], upscale=2)
    assert first.created_at.ToMilliseconds() == BASE_MS
    assert not first.HasField("quality") and first.restored_token == ""
    assert list(message.detected_faces) == []


async def test_a_reprocess_is_listed_queued_then_done_with_its_own_quality_while_the_image_still_shows_r1(
    project: HistoryProjector, history: History, api: HistoryApi, blobs: BlobStore
) -> None:
    await project(uploaded())
    await project(processing("r1"))
    first_result = restored("r1", (0.8, 0.7), 30.0, GFPGAN)
    await project(first_result)
    await project(requested("r2"))

    queued = api._message(await history.get_own(ALICE, IMAGE))
    assert [(version.id, version.status) for version in queued.restorations] == [("r1", "done"), ("r2", "queued")]
    assert queued.restorations[1].options.model == "codeformer"
    assert queued.restorations[1].created_at.ToMilliseconds() == BASE_MS + 60_000

    await project(processing("r2"))
    second_result = restored("r2", (0.95, 0.9), 50.0, CODEFORMER)
    await project(second_result)
    contents = await store_results(blobs, first_result, second_result)

    message = api._message(await history.get_own(ALICE, IMAGE))
    first, second = message.restorations
    assert (first.status, second.status) == ("done", "done")
    assert (first.quality.restorer_model, second.quality.restorer_model) == ("gfpgan-weights", "codeformer-weights")
    assert (first.quality.sharpness_gain, second.quality.sharpness_gain) == (3.0, 5.0)
    assert (first.quality.identity_min, second.quality.identity_min) == pytest.approx((0.7, 0.9))
    assert list(second.quality.warnings) == ["face-index-out-of-range"]
    # Each version's links open its own files.
    for version in (first, second):
        restored_bytes, _ = await history.content(version.restored_token)
        thumbnail_bytes, _ = await history.content(version.thumbnail_token)
        key = "restored/img-1.jpg" if version.id == "r1" else "restored/img-1/r2.jpg"
        assert restored_bytes == contents[key]
        assert thumbnail_bytes == contents[key.replace("restored/", "thumbnails/").replace(".jpg", "-restored.jpg")]
    # The image itself still shows the first version.
    assert message.preferred_restoration == "r1"
    assert message.quality.restorer_model == "gfpgan-weights"
    assert (await history.content(message.restored_token))[0] == contents["restored/img-1.jpg"]


async def test_preferring_the_second_version_moves_the_images_result_links_inline_bytes_and_export(
    project: HistoryProjector,
    history: History,
    api: HistoryApi,
    library: Library,
    blobs: BlobStore,
    database: AsyncIOMotorDatabase,
) -> None:
    await project(uploaded())
    first_result = restored("r1", (0.8, 0.7), 30.0, GFPGAN)
    second_result = restored("r2", (0.95, 0.9), 50.0, CODEFORMER)
    for envelope in (first_result, requested("r2"), second_result):
        await project(envelope)
    contents = await store_results(blobs, first_result, second_result)

    item = await prefer(history, ALICE, IMAGE, "r2")

    message = api._message(item)
    assert message.preferred_restoration == "r2"
    assert message.status == "done"
    assert message.quality.restorer_model == "codeformer-weights"
    assert (await history.content(message.restored_token))[0] == contents["restored/img-1/r2.jpg"]
    # The original's thumbnail is the same for every version.
    assert (await history.content(message.thumbnail_token))[0] == contents["thumbnails/img-1-original.jpg"]
    assert await library.restored_content(await history.get_own(ALICE, IMAGE)) == contents["restored/img-1/r2.jpg"]
    [exported] = await ExportSource(database).page(ALICE, BASE_MS, "", 10)
    assert exported["restored_key"] == "restored/img-1/r2.jpg"
    assert exported["quality"]["restorer_model"] == "codeformer-weights"
    # Back to the first: everything follows again.
    again = await prefer(history, ALICE, IMAGE, "r1")
    assert again.restored_key == "restored/img-1.jpg"
    assert again.quality["restorer_model"] == "gfpgan-weights"


async def test_only_a_done_version_of_ones_own_image_can_be_preferred(
    project: HistoryProjector, history: History
) -> None:
    await project(uploaded())
    await project(restored("r1", (0.8, 0.7), 30.0, GFPGAN))
    await project(requested("r2"))
    await project(requested("r3"))
    await project(failed("r3", "option_unsupported"))

    with pytest.raises(Conflict) as queued:
        await prefer(history, ALICE, IMAGE, "r2")
    with pytest.raises(Conflict):
        await prefer(history, ALICE, IMAGE, "r3")
    with pytest.raises(NotFound) as unknown:
        await prefer(history, ALICE, IMAGE, "r9")
    with pytest.raises(NotFound) as not_hers:
        await prefer(history, BOB, IMAGE, "r1")

    assert queued.value.reason == "restoration-not-done"
    assert unknown.value.reason == "restoration-not-found"
    assert not_hers.value.reason == "not-found"
    item = await history.get_own(ALICE, IMAGE)
    assert item.preferred_restoration == "r1"
    failed_version = item.version("r3")
    assert failed_version is not None and (failed_version.status, failed_version.error) == (
        "failed",
        "option_unsupported",
    )


async def test_a_late_result_of_r1_does_not_replace_the_preferred_version(
    project: HistoryProjector, history: History
) -> None:
    await project(uploaded())
    await project(processing("r1"))
    await project(requested("r2"))
    await project(restored("r2", (0.95, 0.9), 50.0, CODEFORMER))
    await prefer(history, ALICE, IMAGE, "r2")

    await project(restored("r1", (0.8, 0.7), 30.0, GFPGAN))
    await project(processing("r1"))

    item = await history.get_own(ALICE, IMAGE)
    assert item.preferred_restoration == "r2"
    assert item.restored_key == "restored/img-1/r2.jpg"
    assert [(version.id, version.status) for version in item.versions] == [("r1", "done"), ("r2", "done")]


async def test_faces_have_boxes_are_stored_and_indexed_once_and_show_the_preferred_versions_identity(
    project: HistoryProjector,
    history: History,
    api: HistoryApi,
    faces: FaceRepository,
    face_index: EdgeFaceIndex,
) -> None:
    await project(uploaded())
    await project(restored("r1", (0.8, 0.7), 30.0, GFPGAN))
    stored_first = await faces.of_image(IMAGE)
    await project(requested("r2"))
    # Another worker embeds slightly differently: the image keeps the faces stored first.
    await project(restored("r2", (0.95, 0.9), 50.0, CODEFORMER, embedding_shift=0.5))

    stored = await faces.of_image(IMAGE)
    assert [doc["embedding"] for doc in stored] == [doc["embedding"] for doc in stored_first]
    assert [doc["embedding"] for doc in stored] == [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]
    assert await face_index.count() == 2
    message = api._message(await history.get_own(ALICE, IMAGE))
    assert [(face.index, list(face.box), face.detection_score) for face in message.detected_faces] == [
        (0, [10, 20, 110, 140], pytest.approx(0.98)),
        (1, [200, 30, 290, 150], pytest.approx(0.91)),
    ]
    assert [face.identity_similarity for face in message.detected_faces] == pytest.approx([0.8, 0.7])
    await prefer(history, ALICE, IMAGE, "r2")
    preferred = api._message(await history.get_own(ALICE, IMAGE))
    assert [face.identity_similarity for face in preferred.detected_faces] == pytest.approx([0.95, 0.9])
    assert await face_index.count() == 2


async def test_faces_come_from_a_later_version_when_the_first_one_failed(
    project: HistoryProjector, history: History, api: HistoryApi, faces: FaceRepository
) -> None:
    await project(uploaded())
    await project(failed("r1", "storage_unavailable"))
    await project(requested("r2"))
    await project(restored("r2", (0.95, 0.9), 50.0, CODEFORMER))

    assert len(await faces.of_image(IMAGE)) == 2
    message = api._message(await history.get_own(ALICE, IMAGE))
    assert message.status == "failed"
    assert [list(face.box) for face in message.detected_faces] == [[10, 20, 110, 140], [200, 30, 290, 150]]


async def test_under_review_the_owner_gets_no_version_links(
    project: HistoryProjector, history: History, api: HistoryApi
) -> None:
    await project(uploaded())
    await project(restored("r1", (0.8, 0.7), 30.0, GFPGAN))
    await project(requested("r2"))
    await project(restored("r2", (0.95, 0.9), 50.0, CODEFORMER))
    hidden = await history.items.set_under_review(IMAGE, True, "reported")
    assert hidden is not None

    owner = api._message(hidden)
    admin = api._message(hidden, for_admin=True)

    assert all(not (version.restored_token or version.thumbnail_token) for version in owner.restorations)
    assert all(version.restored_token and version.thumbnail_token for version in admin.restorations)


async def test_deleting_an_image_removes_every_versions_files(
    project: HistoryProjector, history: History, blobs: BlobStore
) -> None:
    await project(uploaded())
    first_result = restored("r1", (0.8, 0.7), 30.0, GFPGAN)
    second_result = restored("r2", (0.95, 0.9), 50.0, CODEFORMER)
    for envelope in (first_result, requested("r2"), second_result):
        await project(envelope)
    contents = await store_results(blobs, first_result, second_result)

    await history.delete(IMAGE, owner_id=ALICE, deleted_by="user")

    for key in contents:
        assert not await blobs.exists(key), key


def bucket_objects(s3_endpoint: str, bucket: str) -> dict[str, int]:
    """What the bucket holds, as its server lists it: every object's size by key."""
    settings = StorageSettings(s3_endpoint=s3_endpoint)
    client = Minio(
        s3_endpoint,
        access_key=settings.s3_access_key.get_secret_value(),
        secret_key=settings.s3_secret_key.get_secret_value(),
        secure=False,
        region=settings.s3_region,
    )
    return {str(obj.object_name): int(obj.size or 0) for obj in client.list_objects(bucket, recursive=True)}


async def deletions_announced(amqp_url: str, queue_name: str, expected: int) -> list[events_pb2.ImageDeleted]:
    announced: list[events_pb2.ImageDeleted] = []
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        queue = await (await connection.channel()).get_queue(queue_name, ensure=True)
        deadline = time.monotonic() + 10
        while len(announced) < expected and time.monotonic() < deadline:
            message = await queue.get(no_ack=True, fail=False)
            if message is None:
                await asyncio.sleep(0.05)
                continue
            announced.append(events_pb2.Envelope.FromString(message.body).image_deleted)
    return announced


async def test_deleting_an_image_announces_what_its_files_took_in_the_bucket_each_once(
    project: HistoryProjector, history: History, blobs: BlobStore, bus: EventBus, amqp_url: str, s3_endpoint: str
) -> None:
    await bus.declare_queue("probe", ["image.deleted"])
    await project(uploaded())
    await blobs.put(f"originals/{IMAGE}.jpg", b"o" * 5000, "image/jpeg")
    await project(uploaded(image_id="img-kept"))
    await blobs.put("originals/img-kept.jpg", b"k" * 700, "image/jpeg")
    # Three versions, each written as the worker writes them: its result, its thumbnail and the
    # original's thumbnail again (one object, rewritten by every version).
    for number, size in ((1, 1000), (2, 2000), (3, 3000)):
        restoration_id = f"r{number}"
        if number > 1:
            await project(requested(restoration_id))
        result = restored(restoration_id, (0.9, 0.8), 40.0, CODEFORMER)
        await project(result)
        event = result.image_restored
        await blobs.put(event.restored_key, b"r" * size, "image/jpeg")
        await blobs.put(event.original_thumbnail_key, b"t" * 300, "image/jpeg")
        await blobs.put(event.restored_thumbnail_key, b"s" * (size // 10), "image/jpeg")
    before = bucket_objects(s3_endpoint, blobs.bucket)

    await history.delete(IMAGE, owner_id=ALICE, deleted_by="user")

    after = bucket_objects(s3_endpoint, blobs.bucket)
    assert after == {"originals/img-kept.jpg": 700}
    removed = sum(before.values()) - sum(after.values())
    assert removed == 5000 + 300 + (1000 + 100) + (2000 + 200) + (3000 + 300)
    (announced,) = await deletions_announced(amqp_url, bus.queue_name("probe"), expected=1)
    assert announced.HasField("freed_bytes") and announced.freed_bytes == removed


async def test_deleting_everything_and_erasing_the_account_remove_every_versions_files(
    project: HistoryProjector,
    history: History,
    library: Library,
    blobs: BlobStore,
    database: AsyncIOMotorDatabase,
) -> None:
    keys: list[str] = []
    for image_id in ("img-a", "img-b"):
        first_result = restored("r1", (0.8, 0.7), 30.0, GFPGAN, image_id=image_id)
        second_result = restored("r2", (0.9, 0.9), 40.0, CODEFORMER, image_id=image_id)
        for envelope in (uploaded(image_id=image_id), first_result, requested("r2", image_id=image_id), second_result):
            await project(envelope)
        for result in (first_result.image_restored, second_result.image_restored):
            for key in (result.restored_key, result.restored_thumbnail_key, result.original_thumbnail_key):
                await blobs.put(key, b"x", "image/jpeg")
                keys.append(key)

    await library.delete_all(ALICE)
    await library.wait_for_purge()
    await UserEraser(database, history, secret="erase-secret-0123456789").erase(ALICE)

    for key in keys:
        assert not await blobs.exists(key), key


async def test_a_result_for_a_deleted_image_is_removed_again(
    project: HistoryProjector, history: History, blobs: BlobStore
) -> None:
    await project(uploaded())
    await project(restored("r1", (0.8, 0.7), 30.0, GFPGAN))
    await project(requested("r2"))
    await history.delete(IMAGE, owner_id=ALICE, deleted_by="user")
    late = restored("r2", (0.95, 0.9), 50.0, CODEFORMER)
    contents = await store_results(blobs, late)

    await project(late)

    assert not await blobs.exists("restored/img-1/r2.jpg")
    assert not await blobs.exists("thumbnails/img-1/r2-restored.jpg")
    assert set(contents) >= {"restored/img-1/r2.jpg"}
    assert await history.items.get(IMAGE) is None


async def test_an_image_from_before_versions_keeps_its_result_as_r1_when_it_is_reprocessed(
    project: HistoryProjector, history: History, database: AsyncIOMotorDatabase
) -> None:
    # Events without options or version ids, as published before versions existed.
    await project(uploaded(options=None))
    await project(restored("", (0.8, 0.7), 30.0))
    item = await history.get_own(ALICE, IMAGE)
    assert [(version.id, version.status, version.restored_key) for version in item.versions] == [
        ("r1", "done", "restored/img-1.jpg")
    ]

    await project(requested("r2"))
    await project(restored("r2", (0.95, 0.9), 50.0, CODEFORMER))
    await prefer(history, ALICE, IMAGE, "r2")
    back = await prefer(history, ALICE, IMAGE, "r1")

    assert back.restored_key == "restored/img-1.jpg"
    assert back.quality["sharpness_after"] == 30.0
    doc = await database["items"].find_one({"_id": IMAGE})
    assert doc is not None and doc["restorations"]["r1"]["restored_key"] == "restored/img-1.jpg"


async def test_restored_items_from_before_faces_were_listed_get_theirs_from_the_maintenance_pass(
    project: HistoryProjector, history: History, api: HistoryApi, library: Library, database: AsyncIOMotorDatabase
) -> None:
    await project(uploaded(options=None))
    await project(restored("", (0.8, 0.7), 30.0))
    # As an item projected by the previous version of the service was stored.
    await database["items"].update_one({"_id": IMAGE}, {"$unset": {"detected_faces": "", "faces_from": ""}})
    assert list(api._message(await history.get_own(ALICE, IMAGE)).detected_faces) == []

    assert await library.backfill_detected_faces() == 1
    assert await library.backfill_detected_faces() == 0

    message = api._message(await history.get_own(ALICE, IMAGE))
    assert [(list(face.box), face.identity_similarity) for face in message.detected_faces] == [
        ([10, 20, 110, 140], pytest.approx(0.8)),
        ([200, 30, 290, 150], pytest.approx(0.7)),
    ]
    doc = await database["items"].find_one({"_id": IMAGE})
    assert doc is not None and doc["faces_from"] == "r1"


async def test_an_upload_and_its_result_applied_at_the_same_time_end_listed_done_with_faces_indexed(
    project: HistoryProjector, history: History, api: HistoryApi, face_index: EdgeFaceIndex
) -> None:
    image_ids = [f"img-{index}" for index in range(8)]

    for image_id in image_ids:
        await asyncio.gather(
            project(uploaded(image_id=image_id)), project(restored("r1", (0.8, 0.7), 30.0, GFPGAN, image_id=image_id))
        )

    for image_id in image_ids:
        message = api._message(await history.get_own(ALICE, image_id))
        assert message.status == "done"
        assert [version.status for version in message.restorations] == ["done"]
        assert len(message.detected_faces) == 2
    assert await face_index.count() == 2 * len(image_ids)
