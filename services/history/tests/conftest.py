"""Real servers behind the history service's classes: a Mongo database, an S3 bucket and an
events exchange of the test's own (named after `unique_name`), and helpers that build the
events the other services publish."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from types import SimpleNamespace

import aio_pika
import cv2
import numpy as np
import pytest
from motor.motor_asyncio import AsyncIOMotorDatabase

from facerestore.events.v1 import events_pb2
from facerestore_common import mongo
from facerestore_common.events import EventBus, new_envelope
from facerestore_common.settings import StorageSettings
from facerestore_common.storage import BlobStore
from history_service.consumer import HistoryProjector
from history_service.downloads import DownloadTokens
from history_service.faces import FaceRepository
from history_service.history import History
from history_service.items import ItemRepository

DOWNLOAD_SECRET = "history-tests-download-secret-0123456789abcdef"


@pytest.fixture
async def database(mongo_url: str, unique_name: str) -> AsyncIterator[AsyncIOMotorDatabase]:
    db = mongo.connect(mongo_url, unique_name)
    yield db
    db.client.close()


@pytest.fixture
async def items(database: AsyncIOMotorDatabase) -> ItemRepository:
    repository = ItemRepository(database)
    await repository.create_indexes()
    return repository


@pytest.fixture
async def blobs(s3_endpoint: str, unique_name: str) -> BlobStore:
    store = BlobStore(StorageSettings(s3_endpoint=s3_endpoint, s3_bucket=f"h-{unique_name}"))
    await store.ensure_bucket()
    return store


@pytest.fixture
async def bus(amqp_url: str, unique_name: str) -> AsyncIterator[EventBus]:
    event_bus = EventBus(amqp_url, f"{unique_name}.events", unique_name, "history-tests")
    await event_bus.connect()
    yield event_bus
    await event_bus.close()
    # The exchange and any queue a test declared are durable: remove them so the broker stays clean.
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        for queue in event_bus.consumer_queues("probe"):
            await channel.queue_delete(queue)
        for exchange in (f"{unique_name}.events", event_bus.dead_letter_exchange):
            await channel.exchange_delete(exchange)


@pytest.fixture
def download_secret() -> str:
    return DOWNLOAD_SECRET


@pytest.fixture
def downloads(download_secret: str) -> DownloadTokens:
    return DownloadTokens(download_secret, ttl_seconds=900)


@pytest.fixture
async def faces(database: AsyncIOMotorDatabase) -> FaceRepository:
    repository = FaceRepository(database)
    await repository.create_indexes()
    return repository


@pytest.fixture
def history(
    items: ItemRepository, blobs: BlobStore, bus: EventBus, downloads: DownloadTokens, faces: FaceRepository
) -> History:
    return History(items, blobs, bus, downloads, faces=faces)


@pytest.fixture
def project(history: History) -> HistoryProjector:
    return HistoryProjector(history)


def uploaded(
    image_id: str,
    user_id: str,
    created_at_ms: int = 1_700_000_000_000,
    tags: tuple[str, ...] = (),
    note: str = "",
    location: str = "",
) -> events_pb2.Envelope:
    event = events_pb2.ImageUploaded(
        image_id=image_id,
        user_id=user_id,
        original_key=f"originals/{user_id}/{image_id}.jpg",
        content_type="image/jpeg",
        width=640,
        height=480,
        size_bytes=12_345,
        tags=list(tags),
        note=note,
        location=location,
        sha256="ab" * 32,
    )
    event.created_at.FromMilliseconds(created_at_ms)
    return new_envelope("upload", image_uploaded=event)


def processing(image_id: str, user_id: str) -> events_pb2.Envelope:
    return new_envelope("inference", image_processing=events_pb2.ImageProcessing(image_id=image_id, user_id=user_id))


def restored(
    image_id: str,
    user_id: str,
    faces: int = 1,
    sharpness_before: float = 40.0,
    sharpness_after: float = 100.0,
    duration_ms: float = 250.0,
) -> events_pb2.Envelope:
    return new_envelope(
        "inference",
        image_restored=events_pb2.ImageRestored(
            image_id=image_id,
            user_id=user_id,
            restored_key=f"restored/{user_id}/{image_id}.png",
            original_thumbnail_key=f"thumbnails/{user_id}/{image_id}.original.jpg",
            restored_thumbnail_key=f"thumbnails/{user_id}/{image_id}.restored.jpg",
            faces=faces,
            backend="classical",
            sharpness_before=sharpness_before,
            sharpness_after=sharpness_after,
            duration_ms=duration_ms,
        ),
    )


def failed(image_id: str, user_id: str, reason: str, detail: str = "") -> events_pb2.Envelope:
    return new_envelope(
        "inference",
        image_failed=events_pb2.ImageFailed(image_id=image_id, user_id=user_id, reason=reason, detail=detail),
    )


def encoded_image(extension: str, seed: int) -> bytes:
    """A real, decodable image (random pixels, fixed seed) in the given format."""
    pixels = np.random.default_rng(seed).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    ok, data = cv2.imencode(extension, pixels)
    assert ok
    return data.tobytes()


@pytest.fixture
def events() -> SimpleNamespace:
    """The event builders, for tests (test modules cannot import this conftest)."""
    return SimpleNamespace(uploaded=uploaded, processing=processing, restored=restored, failed=failed)


StoreRenditions = Callable[[events_pb2.Envelope, events_pb2.Envelope], Awaitable[dict[str, bytes]]]


@pytest.fixture
def store_renditions(blobs: BlobStore) -> StoreRenditions:
    """Put the original (named by an uploaded event) and the results (named by a restored event) in the bucket."""

    async def store(upload: events_pb2.Envelope, result: events_pb2.Envelope) -> dict[str, bytes]:
        contents = {
            upload.image_uploaded.original_key: encoded_image(".jpg", 1),
            result.image_restored.restored_key: encoded_image(".png", 2),
            result.image_restored.original_thumbnail_key: encoded_image(".jpg", 3),
            result.image_restored.restored_thumbnail_key: encoded_image(".jpg", 4),
        }
        for key, data in contents.items():
            await blobs.put(key, data, "application/octet-stream")
        return contents

    return store
