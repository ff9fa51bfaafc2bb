"""Options and versions on the upload side, over the real Mongo (nx-27017) and S3 (localbucket)
stand-ins and the real RabbitMQ: an upload's options go into its job and its event (version
"r1", routed by model); reprocessing an image allocates "r2", "r3", ... once each, even when
asked at the same time, and announces each with the stored original; someone else's image is
not found; a request the broker cannot take now is published later by the relay, once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aio_pika
import pytest
from motor.motor_asyncio import AsyncIOMotorDatabase

from facerestore.events.v1 import events_pb2
from facerestore_common.errors import InvalidArgument, NotFound, Unprocessable
from facerestore_common.events import EventBus
from facerestore_common.images import ImageLimits
from facerestore_common.metadata import parse_metadata
from facerestore_common.storage import BlobStore
from upload_service.erasure import UploadErasure
from upload_service.idempotency import IdempotencyKeys
from upload_service.jobs import Job, JobRepository
from upload_service.outbox import OutboxRelay
from upload_service.restorations import RestorationRequestRepository, Restorations
from upload_service.uploads import Uploads

LIMITS = ImageLimits(max_bytes=1_048_576, max_pixels=40_000_000, max_side=12_000, min_side=64, jpeg_quality=92)
ALICE = "user-alice"
BOB = "user-bob"
CODEFORMER = events_pb2.RestorationOptions(model="codeformer", fidelity=0.7, faces=[2, 0], upscale=2)
GFPGAN = events_pb2.RestorationOptions(model="gfpgan", upscale=1)


@pytest.fixture
async def requests(database: AsyncIOMotorDatabase) -> RestorationRequestRepository:
    repository = RestorationRequestRepository(database)
    await repository.create_indexes()
    return repository


@pytest.fixture
async def bus(amqp_url: str, unique_name: str) -> AsyncIterator[EventBus]:
    event_bus = EventBus(amqp_url, f"{unique_name}.events", unique_name, "upload-test")
    await event_bus.connect()
    yield event_bus
    await event_bus.close()
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        for consumer in ("uploads", "requests"):
            for queue in event_bus.consumer_queues(consumer):
                await channel.queue_delete(queue)
        for exchange in (f"{unique_name}.events", event_bus.dead_letter_exchange):
            await channel.exchange_delete(exchange)


@pytest.fixture
async def probes(bus: EventBus) -> dict[str, str]:
    """Queues bound to every routing key of the two events (a model's key included), declared
    before anything is published."""
    await bus.declare_queue("uploads", ["image.uploaded.#"])
    await bus.declare_queue("requests", ["restoration.requested.#"])
    return {"uploads": bus.queue_name("uploads"), "requests": bus.queue_name("requests")}


async def take(amqp_url: str, queue_name: str, count: int) -> list[tuple[str, events_pb2.Envelope]]:
    """Up to `count` messages (routing key and envelope), waiting at most 5 s for each."""
    taken = []
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(queue_name, ensure=True)
        for _ in range(count):
            message = await queue.get(no_ack=True, fail=False, timeout=5)
            if message is None:
                break
            taken.append((message.routing_key or "", events_pb2.Envelope.FromString(message.body)))
    return taken


@pytest.fixture
def restorations(jobs: JobRepository, requests: RestorationRequestRepository, bus: EventBus) -> Restorations:
    return Restorations(jobs, requests, bus, publish_timeout_seconds=2, relay_grace_ms=0)


async def uploaded(blobs: BlobStore, jobs: JobRepository, bus: EventBus, photo: bytes, user_id: str = ALICE) -> Job:
    job, _ = await Uploads(blobs, jobs, bus, LIMITS).accept(user_id, photo, parse_metadata([], "", ""), options=GFPGAN)
    return job


async def test_an_uploads_options_are_kept_with_its_job_and_announced_as_version_r1_under_its_models_key(
    amqp_url: str, blobs: BlobStore, jobs: JobRepository, bus: EventBus, probes: dict[str, str], face_jpeg: bytes
) -> None:
    uploads = Uploads(blobs, jobs, bus, LIMITS)

    job, _ = await uploads.accept(ALICE, face_jpeg, parse_metadata([], "", ""), options=CODEFORMER)

    stored = await jobs.get(job.image_id)
    assert stored is not None
    assert stored.options == {"model": "codeformer", "fidelity": 0.7, "faces": [0, 2], "upscale": 2}
    [(routing_key, envelope)] = await take(amqp_url, probes["uploads"], 2)
    assert routing_key == "image.uploaded.codeformer"
    assert envelope.image_uploaded.restoration_id == "r1"
    assert envelope.image_uploaded.options == events_pb2.RestorationOptions(
        model="codeformer", fidelity=0.7, faces=[0, 2], upscale=2
    )


async def test_the_same_idempotency_key_with_other_options_is_another_request(
    blobs: BlobStore, jobs: JobRepository, bus: EventBus, database: AsyncIOMotorDatabase, face_jpeg: bytes
) -> None:
    uploads = Uploads(blobs, jobs, bus, LIMITS, idempotency=IdempotencyKeys(database))
    metadata = parse_metadata([], "", "")
    first, _ = await uploads.accept(ALICE, face_jpeg, metadata, "k-1", options=CODEFORMER)
    again, replayed = await uploads.accept(ALICE, face_jpeg, metadata, "k-1", options=CODEFORMER)

    with pytest.raises(Unprocessable) as refused:
        await uploads.accept(ALICE, face_jpeg, metadata, "k-1", options=GFPGAN)

    assert (again.image_id, replayed) == (first.image_id, True)
    assert refused.value.reason == "idempotency-key-reused"


async def test_reprocessing_allocates_r2_then_r3_and_announces_each_with_the_stored_original(
    amqp_url: str,
    blobs: BlobStore,
    jobs: JobRepository,
    bus: EventBus,
    probes: dict[str, str],
    restorations: Restorations,
    database: AsyncIOMotorDatabase,
    face_jpeg: bytes,
) -> None:
    job = await uploaded(blobs, jobs, bus, face_jpeg)

    second = await restorations.request(ALICE, job.image_id, CODEFORMER)
    third = await restorations.request(ALICE, job.image_id, GFPGAN)

    assert (second.restoration_id, third.restoration_id) == ("r2", "r3")
    announced = await take(amqp_url, probes["requests"], 3)
    assert [key for key, _ in announced] == ["restoration.requested.codeformer", "restoration.requested.gfpgan"]
    first_event = announced[0][1].restoration_requested
    assert first_event.image_id == job.image_id
    assert first_event.user_id == ALICE
    assert first_event.restoration_id == "r2"
    assert first_event.original_key == job.original_key
    assert first_event.options == events_pb2.RestorationOptions(
        model="codeformer", fidelity=0.7, faces=[0, 2], upscale=2
    )
    assert first_event.requested_at.ToMilliseconds() == second.created_at_ms
    assert announced[1][1].event_id == third.event_id
    assert await database["restoration_requests"].count_documents({"published": True}) == 2


async def test_requests_made_at_the_same_time_each_get_their_own_version_id(
    blobs: BlobStore, jobs: JobRepository, bus: EventBus, restorations: Restorations, face_jpeg: bytes
) -> None:
    job = await uploaded(blobs, jobs, bus, face_jpeg)

    made = await asyncio.gather(*(restorations.request(ALICE, job.image_id, GFPGAN) for _ in range(6)))

    assert sorted(request.restoration_id for request in made) == [f"r{number}" for number in range(2, 8)]


async def test_someone_elses_or_an_unknown_image_is_not_found_and_uses_up_no_version_id(
    blobs: BlobStore, jobs: JobRepository, bus: EventBus, restorations: Restorations, face_jpeg: bytes
) -> None:
    job = await uploaded(blobs, jobs, bus, face_jpeg)

    with pytest.raises(NotFound):
        await restorations.request(BOB, job.image_id, GFPGAN)
    with pytest.raises(NotFound):
        await restorations.request(ALICE, "no-such-image", GFPGAN)
    mine = await restorations.request(ALICE, job.image_id, GFPGAN)

    assert mine.restoration_id == "r2"


async def test_unresolved_or_out_of_range_options_are_refused_before_anything_is_recorded(
    blobs: BlobStore,
    jobs: JobRepository,
    bus: EventBus,
    restorations: Restorations,
    database: AsyncIOMotorDatabase,
    face_jpeg: bytes,
) -> None:
    job = await uploaded(blobs, jobs, bus, face_jpeg)

    for options in (
        events_pb2.RestorationOptions(model="auto"),
        events_pb2.RestorationOptions(model="codeformer", fidelity=2.0),
        events_pb2.RestorationOptions(model="gfpgan", upscale=4),
    ):
        with pytest.raises(InvalidArgument):
            await restorations.request(ALICE, job.image_id, options)

    assert await database["restoration_requests"].count_documents({}) == 0
    assert (await restorations.request(ALICE, job.image_id, GFPGAN)).restoration_id == "r2"


async def test_a_request_the_broker_refuses_is_kept_and_published_once_by_the_relay(
    amqp_url: str,
    unique_name: str,
    blobs: BlobStore,
    jobs: JobRepository,
    bus: EventBus,
    probes: dict[str, str],
    restorations: Restorations,
    face_jpeg: bytes,
) -> None:
    job = await uploaded(blobs, jobs, bus, face_jpeg)
    # The broker loses the exchange after the service connected: publishing to it is refused.
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        await channel.exchange_delete(f"{unique_name}.events")

    request = await restorations.request(ALICE, job.image_id, CODEFORMER)

    [owed] = await restorations.requests.due_for_publishing(10)
    assert (owed.restoration_id, owed.published) == ("r2", False)
    relaying_bus = EventBus(amqp_url, f"{unique_name}.events", unique_name, "upload-relay")
    await relaying_bus.connect()
    await relaying_bus.declare_queue("requests", ["restoration.requested.#"])
    relaying = Restorations(jobs, restorations.requests, relaying_bus, relay_grace_ms=0)
    relay = OutboxRelay(jobs, Uploads(blobs, jobs, relaying_bus, LIMITS), 0.1, 100, restorations=relaying)
    try:
        assert await relay.run_once() == 1
        assert await relay.run_once() == 0
    finally:
        await relaying_bus.close()
    announced = await take(amqp_url, probes["requests"], 2)
    assert [(key, envelope.event_id) for key, envelope in announced] == [
        ("restoration.requested.codeformer", request.event_id)
    ]
    assert await restorations.requests.due_for_publishing(10) == []


async def test_erasing_a_user_removes_their_reprocessing_requests_only(
    blobs: BlobStore,
    jobs: JobRepository,
    bus: EventBus,
    restorations: Restorations,
    database: AsyncIOMotorDatabase,
    face_jpeg: bytes,
) -> None:
    alices = await uploaded(blobs, jobs, bus, face_jpeg, ALICE)
    bobs = await uploaded(blobs, jobs, bus, face_jpeg, BOB)
    await restorations.request(ALICE, alices.image_id, GFPGAN)
    await restorations.request(BOB, bobs.image_id, GFPGAN)

    await UploadErasure(database, blobs).erase(ALICE)

    left = await database["restoration_requests"].find({}).to_list(None)
    assert [doc["user_id"] for doc in left] == [BOB]


async def test_a_retry_asking_for_auto_is_the_same_request_however_auto_resolves_meanwhile(
    blobs: BlobStore, jobs: JobRepository, bus: EventBus, database: AsyncIOMotorDatabase, face_jpeg: bytes
) -> None:
    uploads = Uploads(blobs, jobs, bus, LIMITS, idempotency=IdempotencyKeys(database))
    metadata = parse_metadata([], "", "")
    # "auto" meant classical at first; a GPU worker has started before the client retries.
    first, _ = await uploads.accept(
        ALICE,
        face_jpeg,
        metadata,
        "k-auto",
        options=events_pb2.RestorationOptions(model="classical"),
        requested_model="auto",
    )
    again, replayed = await uploads.accept(ALICE, face_jpeg, metadata, "k-auto", options=GFPGAN, requested_model="auto")

    assert (again.image_id, replayed) == (first.image_id, True)
    assert again.options["model"] == "classical"
