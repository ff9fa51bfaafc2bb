"""Accepting an upload against the real S3 and Mongo stand-ins and the real RabbitMQ:
the original is stored, the job recorded, the event published; and when a later step
fails, the earlier ones are undone so nothing is left half-done."""

from __future__ import annotations

import asyncio
import hashlib
import io
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING

import aio_pika
import pytest
from minio import Minio
from motor.motor_asyncio import AsyncIOMotorClient, AsyncIOMotorDatabase
from PIL import Image
from pymongo.errors import PyMongoError

from facerestore.events.v1 import events_pb2
from facerestore_common.errors import Conflict, Unavailable, Unprocessable, UnsupportedMediaType
from facerestore_common.events import EventBus
from facerestore_common.images import ImageLimits
from facerestore_common.metadata import parse_metadata
from facerestore_common.settings import StorageSettings
from facerestore_common.storage import BlobStore
from upload_service.idempotency import KEY_LIFETIME_MS, IdempotencyKeys, request_fingerprint
from upload_service.jobs import JobRepository
from upload_service.outbox import OutboxRelay
from upload_service.uploads import Uploads

if TYPE_CHECKING:
    from conftest import TcpRelay

LIMITS = ImageLimits(max_bytes=1_048_576, max_pixels=40_000_000, max_side=12_000, min_side=64, jpeg_quality=92)


@pytest.fixture
async def bus(amqp_url: str, unique_name: str) -> AsyncIterator[EventBus]:
    event_bus = EventBus(amqp_url, f"{unique_name}.events", unique_name, "upload-test")
    await event_bus.connect()
    yield event_bus
    await event_bus.close()
    # Everything this test declared on the shared broker goes away again.
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        for queue in event_bus.consumer_queues("probe"):
            await channel.queue_delete(queue)
        for exchange in (f"{unique_name}.events", event_bus.dead_letter_exchange):
            await channel.exchange_delete(exchange)


@pytest.fixture
async def probe(bus: EventBus, amqp_url: str) -> AsyncIterator[aio_pika.abc.AbstractQueue]:
    """A queue bound to image.uploaded, declared before anything is published, read with aio_pika."""
    await bus.declare_queue("probe", ["image.uploaded"])
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        yield await channel.get_queue(bus.queue_name("probe"), ensure=True)


@pytest.fixture
async def relayed_database(
    mongo_url: str, unique_name: str, tcp_relay: Callable[[str], Awaitable[TcpRelay]]
) -> AsyncIterator[tuple[TcpRelay, AsyncIOMotorDatabase]]:
    """The test's database reached through a relay: cutting it drops the connection as a MongoDB
    restart does. Short timeouts, so that a call on a cut connection fails within a second."""
    relay = await tcp_relay(mongo_url.removeprefix("mongodb://"))
    client: AsyncIOMotorClient = AsyncIOMotorClient(
        f"mongodb://127.0.0.1:{relay.port}", serverSelectionTimeoutMS=500, connectTimeoutMS=500
    )
    yield relay, client[unique_name]
    client.close()


async def restore_and_reconnect(relay: TcpRelay, database: AsyncIOMotorDatabase) -> None:
    """Restore the relay and wait until the driver has found the server again (its monitor
    looks every half second; a client's retry comes later than that)."""
    await relay.restore()
    deadline = time.monotonic() + 15
    while True:
        try:
            await database.command("ping")
            return
        except PyMongoError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def bucket_keys(blobs: BlobStore, s3_endpoint: str) -> list[str]:
    """Every object in the store's bucket, listed with a client of our own."""
    settings = StorageSettings(s3_endpoint=s3_endpoint, s3_bucket=blobs.bucket)
    client = Minio(
        settings.s3_endpoint,
        access_key=settings.s3_access_key.get_secret_value(),
        secret_key=settings.s3_secret_key.get_secret_value(),
        secure=False,
        region=settings.s3_region,
    )

    def listing() -> list[str]:
        return [obj.object_name for obj in client.list_objects(blobs.bucket, recursive=True)]

    return await asyncio.to_thread(listing)


async def next_envelope(queue: aio_pika.abc.AbstractQueue) -> events_pb2.Envelope | None:
    message = await queue.get(no_ack=True, fail=False, timeout=5)
    return None if message is None else events_pb2.Envelope.FromString(message.body)


async def test_accepted_upload_stores_the_original_records_the_job_and_announces_it(
    blobs: BlobStore,
    jobs: JobRepository,
    bus: EventBus,
    database: AsyncIOMotorDatabase,
    probe: aio_pika.abc.AbstractQueue,
    face_jpeg: bytes,
) -> None:
    uploads = Uploads(blobs, jobs, bus, LIMITS)
    metadata = parse_metadata([" Family ", "family", "Lake"], " grandma, 1990 ", "Konstanz")

    job, replayed = await uploads.accept("user-1", face_jpeg, metadata)
    assert replayed is False

    # The job describes what was stored.
    assert job.user_id == "user-1"
    assert job.original_key == f"originals/{job.image_id}.jpg"
    assert job.content_type == "image/jpeg"
    assert (job.width, job.height) == (1280, 886)
    assert job.tags == ["family", "lake"]
    assert (job.note, job.location) == ("grandma, 1990", "Konstanz")

    # The original is in the bucket, as the normalised JPEG the job describes.
    stored = await blobs.get(job.original_key)
    assert len(stored) == job.size_bytes
    assert hashlib.sha256(stored).hexdigest() == job.sha256
    assert Image.open(io.BytesIO(stored)).size == (1280, 886)

    # The job is recorded, queued.
    doc = await database["jobs"].find_one({"_id": job.image_id})
    assert doc is not None
    assert doc["status"] == "queued"
    assert doc["user_id"] == "user-1"
    assert doc["original_key"] == job.original_key
    assert doc["sha256"] == job.sha256
    assert doc["created_at_ms"] == job.created_at_ms

    # The event went out, once, carrying the job.
    envelope = await next_envelope(probe)
    assert envelope is not None
    assert envelope.type == "image.uploaded"
    assert envelope.producer == "upload"
    assert envelope.WhichOneof("payload") == "image_uploaded"
    assert envelope.event_id
    event = envelope.image_uploaded
    assert event.image_id == job.image_id
    assert event.user_id == "user-1"
    assert event.original_key == job.original_key
    assert event.content_type == "image/jpeg"
    assert (event.width, event.height) == (1280, 886)
    assert event.size_bytes == job.size_bytes
    assert event.sha256 == job.sha256
    assert list(event.tags) == ["family", "lake"]
    assert (event.note, event.location) == ("grandma, 1990", "Konstanz")
    assert event.created_at.ToMilliseconds() == job.created_at_ms
    assert await next_envelope(probe) is None


async def test_two_uploads_of_the_same_photo_are_two_jobs(
    blobs: BlobStore,
    jobs: JobRepository,
    bus: EventBus,
    database: AsyncIOMotorDatabase,
    probe: aio_pika.abc.AbstractQueue,
    face_jpeg: bytes,
) -> None:
    uploads = Uploads(blobs, jobs, bus, LIMITS)
    metadata = parse_metadata([], "", "")

    first, _ = await uploads.accept("user-1", face_jpeg, metadata)
    second, _ = await uploads.accept("user-1", face_jpeg, metadata)

    assert first.image_id != second.image_id
    assert first.sha256 == second.sha256
    assert await blobs.exists(first.original_key) and await blobs.exists(second.original_key)
    assert await database["jobs"].count_documents({"user_id": "user-1"}) == 2
    announced = {(await next_envelope(probe)).image_uploaded.image_id for _ in range(2)}  # type: ignore[union-attr]
    assert announced == {first.image_id, second.image_id}


async def test_refused_image_leaves_nothing_behind(
    s3_endpoint: str,
    blobs: BlobStore,
    jobs: JobRepository,
    bus: EventBus,
    database: AsyncIOMotorDatabase,
    probe: aio_pika.abc.AbstractQueue,
) -> None:
    uploads = Uploads(blobs, jobs, bus, LIMITS)
    gif = io.BytesIO()
    Image.new("RGB", (128, 128)).save(gif, format="GIF")

    with pytest.raises(UnsupportedMediaType):
        await uploads.accept("user-1", gif.getvalue(), parse_metadata([], "", ""))

    assert await bucket_keys(blobs, s3_endpoint) == []
    assert await database["jobs"].count_documents({}) == 0
    assert await next_envelope(probe) is None


async def relay_everything(jobs: JobRepository, bus: EventBus) -> int:
    relay = OutboxRelay(jobs, Uploads(jobs=jobs, blobs=None, bus=bus, limits=LIMITS), 0.1, 100)  # type: ignore[arg-type]
    return await relay.run_once()


async def test_upload_accepted_while_the_exchange_is_gone_is_published_later_by_the_relay(
    amqp_url: str,
    s3_endpoint: str,
    unique_name: str,
    blobs: BlobStore,
    jobs: JobRepository,
    bus: EventBus,
    probe: aio_pika.abc.AbstractQueue,
    database: AsyncIOMotorDatabase,
    face_jpeg: bytes,
) -> None:
    uploads = Uploads(blobs, jobs, bus, LIMITS, relay_grace_ms=0)
    # The broker loses the exchange after the service connected: publishing to it is refused (404).
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        await channel.exchange_delete(f"{unique_name}.events")

    job, _ = await uploads.accept("user-1", face_jpeg, parse_metadata(["x"], "", ""))
    await uploads.published()  # its own attempt, after the answer, fails

    # Accepted: the original and the job are kept, the event is owed.
    assert await bucket_keys(blobs, s3_endpoint) == [job.original_key]
    stored = await jobs.get(job.image_id)
    assert stored is not None and stored.published is False

    # Once the broker takes events again, the relay publishes the same event exactly once.
    relaying_bus = EventBus(amqp_url, f"{unique_name}.events", unique_name, "upload-relay")
    await relaying_bus.connect()
    await relaying_bus.declare_queue("probe", ["image.uploaded"])
    try:
        assert await relay_everything(jobs, relaying_bus) == 1
        assert await relay_everything(jobs, relaying_bus) == 0
    finally:
        await relaying_bus.close()
    envelope = await next_envelope(probe)
    assert envelope is not None and envelope.event_id == job.event_id
    assert envelope.image_uploaded.image_id == job.image_id
    assert await next_envelope(probe) is None
    stored = await jobs.get(job.image_id)
    assert stored is not None and stored.published is True


async def test_upload_accepted_on_a_closed_connection_is_kept_for_the_relay(
    s3_endpoint: str,
    blobs: BlobStore,
    jobs: JobRepository,
    bus: EventBus,
    database: AsyncIOMotorDatabase,
    face_jpeg: bytes,
) -> None:
    uploads = Uploads(blobs, jobs, bus, LIMITS, publish_timeout_seconds=1)
    await bus.close()

    job, _ = await uploads.accept("user-1", face_jpeg, parse_metadata([], "", ""))
    await uploads.published()

    assert await database["jobs"].count_documents({"published": False}) == 1
    assert await bucket_keys(blobs, s3_endpoint) == [job.original_key]
    # The relay leaves it alone during the grace period that the upload's own attempt has.
    assert await jobs.due_for_publishing(10) == []


async def test_same_idempotency_key_returns_the_first_upload(
    s3_endpoint: str,
    blobs: BlobStore,
    jobs: JobRepository,
    bus: EventBus,
    probe: aio_pika.abc.AbstractQueue,
    database: AsyncIOMotorDatabase,
    face_jpeg: bytes,
) -> None:
    uploads = Uploads(blobs, jobs, bus, LIMITS, idempotency=IdempotencyKeys(database))
    metadata = parse_metadata(["a"], "note", "")
    first, replayed_first = await uploads.accept("user-1", face_jpeg, metadata, idempotency_key="k-1")
    again, replayed_again = await uploads.accept("user-1", face_jpeg, metadata, idempotency_key="k-1")
    other_user, _ = await uploads.accept("user-2", face_jpeg, metadata, idempotency_key="k-1")

    assert (replayed_first, replayed_again) == (False, True)
    assert again.image_id == first.image_id
    assert other_user.image_id != first.image_id
    assert await database["jobs"].count_documents({}) == 2
    assert len(await bucket_keys(blobs, s3_endpoint)) == 2
    with pytest.raises(Unprocessable) as caught:
        await uploads.accept("user-1", face_jpeg, parse_metadata(["b"], "note", ""), idempotency_key="k-1")
    assert caught.value.reason == "idempotency-key-reused"


async def test_idempotency_key_of_a_refused_upload_is_free_again(
    blobs: BlobStore, jobs: JobRepository, bus: EventBus, database: AsyncIOMotorDatabase, face_jpeg: bytes
) -> None:
    uploads = Uploads(blobs, jobs, bus, LIMITS, idempotency=IdempotencyKeys(database))
    with pytest.raises(UnsupportedMediaType):
        await uploads.accept("user-1", b"GIF89a" + b"\0" * 100, parse_metadata([], "", ""), idempotency_key="k-2")
    job, replayed = await uploads.accept("user-1", face_jpeg, parse_metadata([], "", ""), idempotency_key="k-2")
    assert replayed is False and await jobs.get(job.image_id) is not None


async def test_idempotency_key_expires_after_a_day(
    blobs: BlobStore, jobs: JobRepository, bus: EventBus, database: AsyncIOMotorDatabase, face_jpeg: bytes
) -> None:
    uploads = Uploads(blobs, jobs, bus, LIMITS, idempotency=IdempotencyKeys(database))
    first, _ = await uploads.accept("user-1", face_jpeg, parse_metadata([], "", ""), idempotency_key="k-3")
    await database["idempotency_keys"].update_one(
        {"_id": "user-1:k-3"}, {"$inc": {"created_at_ms": -(KEY_LIFETIME_MS + 1000)}}
    )
    later, replayed = await uploads.accept("user-1", face_jpeg, parse_metadata([], "", ""), idempotency_key="k-3")
    assert replayed is False and later.image_id != first.image_id


async def test_failed_job_record_undoes_the_blob(
    s3_endpoint: str,
    unique_name: str,
    blobs: BlobStore,
    bus: EventBus,
    probe: aio_pika.abc.AbstractQueue,
    face_jpeg: bytes,
) -> None:
    # A Mongo that does not answer: a port nothing listens on.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead_port = sock.getsockname()[1]
    client: AsyncIOMotorClient = AsyncIOMotorClient(
        f"mongodb://127.0.0.1:{dead_port}", serverSelectionTimeoutMS=300, connectTimeoutMS=300
    )
    uploads = Uploads(blobs, JobRepository(client[unique_name]), bus, LIMITS)
    try:
        with pytest.raises(Unavailable) as caught:
            await uploads.accept("user-1", face_jpeg, parse_metadata([], "", ""))
    finally:
        client.close()

    assert caught.value.reason == "database-unavailable"
    assert await bucket_keys(blobs, s3_endpoint) == []
    assert await next_envelope(probe) is None


async def test_unreachable_storage_records_no_job(
    jobs: JobRepository,
    bus: EventBus,
    database: AsyncIOMotorDatabase,
    probe: aio_pika.abc.AbstractQueue,
    face_jpeg: bytes,
    s3_endpoint: str,
    unique_name: str,
) -> None:
    # A bucket that was never created: the store refuses the object.
    missing = BlobStore(StorageSettings(s3_endpoint=s3_endpoint, s3_bucket=f"missing-{unique_name}"))
    uploads = Uploads(missing, jobs, bus, LIMITS)

    with pytest.raises(Unavailable) as caught:
        await uploads.accept("user-1", face_jpeg, parse_metadata([], "", ""))

    assert caught.value.reason == "storage-unavailable"
    assert await database["jobs"].count_documents({}) == 0
    assert await next_envelope(probe) is None


async def test_upload_whose_publication_cannot_be_recorded_stays_accepted_under_its_key(
    blobs: BlobStore,
    bus: EventBus,
    probe: aio_pika.abc.AbstractQueue,
    database: AsyncIOMotorDatabase,
    face_jpeg: bytes,
    relayed_database: tuple[TcpRelay, AsyncIOMotorDatabase],
) -> None:
    # The database connection drops right after the broker confirmed the event (found by
    # `make chaos`: the upload failed, freed its key, and the client's retry made a second image;
    # the event now goes out after the answer, and losing its record must still change nothing).
    relay, through_relay = relayed_database
    publish = bus.publish

    async def publish_then_lose_the_database(envelope: events_pb2.Envelope) -> None:
        await publish(envelope)
        await relay.cut()

    bus.publish = publish_then_lose_the_database  # type: ignore[method-assign]
    uploads = Uploads(blobs, JobRepository(through_relay), bus, LIMITS, IdempotencyKeys(through_relay))
    job, replayed = await uploads.accept("user-1", face_jpeg, parse_metadata([], "", ""), idempotency_key="k-9")
    await uploads.published()
    await restore_and_reconnect(relay, through_relay)
    bus.publish = publish  # type: ignore[method-assign]
    again, replayed_again = await uploads.accept("user-1", face_jpeg, parse_metadata([], "", ""), idempotency_key="k-9")

    assert (replayed, replayed_again) == (False, True)
    assert again.image_id == job.image_id
    assert await database["jobs"].count_documents({}) == 1
    # Unconfirmed in the job, so the relay publishes it again (the same event id).
    assert (await database["jobs"].find_one({"_id": job.image_id}))["published"] is False
    envelope = await next_envelope(probe)
    assert envelope is not None and envelope.image_uploaded.image_id == job.image_id
    assert envelope.event_id == job.event_id


async def test_a_database_that_drops_during_the_key_claim_is_a_retryable_503_and_the_key_stays_usable(
    s3_endpoint: str,
    blobs: BlobStore,
    bus: EventBus,
    probe: aio_pika.abc.AbstractQueue,
    database: AsyncIOMotorDatabase,
    face_jpeg: bytes,
    relayed_database: tuple[TcpRelay, AsyncIOMotorDatabase],
) -> None:
    # Issue 14 (`make chaos`, MongoDB restarting): the claim's driver error reached the client as a 500.
    relay, through_relay = relayed_database
    uploads = Uploads(blobs, JobRepository(through_relay), bus, LIMITS, IdempotencyKeys(through_relay))
    metadata = parse_metadata([], "", "")
    await relay.cut()
    with pytest.raises(Unavailable) as caught:
        await uploads.accept("user-1", face_jpeg, metadata, idempotency_key="k-10")
    await restore_and_reconnect(relay, through_relay)
    job, replayed = await uploads.accept("user-1", face_jpeg, metadata, idempotency_key="k-10")

    assert (caught.value.reason, caught.value.retry_after) == ("database-unavailable", 2)
    assert replayed is False
    assert await database["jobs"].count_documents({}) == 1
    assert await bucket_keys(blobs, s3_endpoint) == [job.original_key]
    envelope = await next_envelope(probe)
    assert envelope is not None and envelope.image_uploaded.image_id == job.image_id


async def test_an_upload_whose_caller_went_away_keeps_its_key_so_a_retry_answers_with_it(
    s3_endpoint: str,
    blobs: BlobStore,
    jobs: JobRepository,
    bus: EventBus,
    probe: aio_pika.abc.AbstractQueue,
    database: AsyncIOMotorDatabase,
    face_jpeg: bytes,
) -> None:
    # Issue 14: a deadline that passes (or a client that hangs up) cancels the gRPC handler; the
    # cancel freed the key of an upload that went on to record its job (here storage is slow),
    # and the client's retry with the same key made a second image.
    put = blobs.put
    storing, stored = asyncio.Event(), asyncio.Event()

    async def slow_put(key: str, data: bytes, content_type: str) -> None:
        storing.set()
        await stored.wait()
        await put(key, data, content_type)

    blobs.put = slow_put  # type: ignore[method-assign]
    uploads = Uploads(blobs, jobs, bus, LIMITS, idempotency=IdempotencyKeys(database))
    metadata = parse_metadata([], "", "")
    first = asyncio.ensure_future(uploads.accept("user-1", face_jpeg, metadata, idempotency_key="k-11"))
    await storing.wait()
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    stored.set()
    await uploads.close()  # the abandoned upload finishes: its job is recorded, its event sent
    again, replayed = await uploads.accept("user-1", face_jpeg, metadata, idempotency_key="k-11")

    assert replayed is True
    assert await database["jobs"].count_documents({}) == 1
    assert await bucket_keys(blobs, s3_endpoint) == [again.original_key]
    # The upload went on without its caller: its event went out, once.
    envelope = await next_envelope(probe)
    assert envelope is not None and envelope.image_uploaded.image_id == again.image_id
    assert await next_envelope(probe) is None


async def test_a_key_claimed_by_an_upload_that_recorded_nothing_is_taken_over_after_the_lease(
    s3_endpoint: str,
    blobs: BlobStore,
    jobs: JobRepository,
    bus: EventBus,
    probe: aio_pika.abc.AbstractQueue,
    database: AsyncIOMotorDatabase,
    face_jpeg: bytes,
) -> None:
    keys = IdempotencyKeys(database)
    uploads = Uploads(blobs, jobs, bus, LIMITS, idempotency=keys)  # a lease of 60 s
    metadata = parse_metadata([], "", "")
    # The claim was written but the database dropped before it answered: that request got a 503
    # and recorded no job, and nothing was left to free the key.
    await keys.claim("user-1", "k-12", request_fingerprint(face_jpeg, [], "", ""), "claimed-then-lost")

    with pytest.raises(Conflict) as caught:
        await uploads.accept("user-1", face_jpeg, metadata, idempotency_key="k-12")
    assert caught.value.reason == "idempotency-key-in-use"  # within the lease it may still finish
    await database["idempotency_keys"].update_one({"_id": "user-1:k-12"}, {"$inc": {"created_at_ms": -61_000}})
    job, replayed = await uploads.accept("user-1", face_jpeg, metadata, idempotency_key="k-12")
    again, replayed_again = await uploads.accept("user-1", face_jpeg, metadata, idempotency_key="k-12")

    assert (job.image_id, replayed) == ("claimed-then-lost", False)
    assert (again.image_id, replayed_again) == ("claimed-then-lost", True)
    assert await database["jobs"].count_documents({}) == 1
    assert await bucket_keys(blobs, s3_endpoint) == [job.original_key]
    envelope = await next_envelope(probe)
    assert envelope is not None and envelope.image_uploaded.image_id == "claimed-then-lost"
