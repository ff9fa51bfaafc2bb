"""Options and versions on the upload side, over the real Mongo (nx-27017) and S3 (localbucket)
stand-ins and the real RabbitMQ: an upload's options go into its job and its event (version
"r1", routed by model); reprocessing an image allocates "r2", "r3", ... once each, even when
asked at the same time, and announces each with the stored original; someone else's image is
not found; a request the broker cannot take now is published later by the relay, once. Under an
Idempotency-Key (per user and image) a repeat answers with the first version, once recorded and
announced; other options under the key are refused, a key whose request is unfinished is in use."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aio_pika
import pytest
from motor.motor_asyncio import AsyncIOMotorDatabase

from facerestore.events.v1 import events_pb2
from facerestore_common.errors import Conflict, InvalidArgument, NotFound, Unprocessable
from facerestore_common.events import EventBus
from facerestore_common.images import ImageLimits
from facerestore_common.metadata import parse_metadata
from facerestore_common.storage import BlobStore
from upload_service.erasure import UploadErasure
from upload_service.idempotency import IdempotencyKeys, options_fingerprint
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


@pytest.fixture
def keyed(
    jobs: JobRepository, requests: RestorationRequestRepository, bus: EventBus, database: AsyncIOMotorDatabase
) -> Restorations:
    """Restorations that honour an Idempotency-Key (a claim lease of 60 s)."""
    return Restorations(
        jobs,
        requests,
        bus,
        publish_timeout_seconds=2,
        relay_grace_ms=0,
        idempotency=IdempotencyKeys.for_restorations(database),
    )


async def uploaded(blobs: BlobStore, jobs: JobRepository, bus: EventBus, photo: bytes, user_id: str = ALICE) -> Job:
    uploads = Uploads(blobs, jobs, bus, LIMITS)
    job, _ = await uploads.accept(user_id, photo, parse_metadata([], "", ""), options=GFPGAN)
    await uploads.published()  # its event goes out after the answer
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

    second, _ = await restorations.request(ALICE, job.image_id, CODEFORMER)
    third, _ = await restorations.request(ALICE, job.image_id, GFPGAN)

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

    assert sorted(request.restoration_id for request, _ in made) == [f"r{number}" for number in range(2, 8)]


async def test_someone_elses_or_an_unknown_image_is_not_found_and_uses_up_no_version_id(
    blobs: BlobStore, jobs: JobRepository, bus: EventBus, restorations: Restorations, face_jpeg: bytes
) -> None:
    job = await uploaded(blobs, jobs, bus, face_jpeg)

    with pytest.raises(NotFound):
        await restorations.request(BOB, job.image_id, GFPGAN)
    with pytest.raises(NotFound):
        await restorations.request(ALICE, "no-such-image", GFPGAN)
    mine, _ = await restorations.request(ALICE, job.image_id, GFPGAN)

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
    assert (await restorations.request(ALICE, job.image_id, GFPGAN))[0].restoration_id == "r2"


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

    request, _ = await restorations.request(ALICE, job.image_id, CODEFORMER)

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


async def test_erasing_a_user_removes_their_reprocessing_requests_and_their_keys_only(
    blobs: BlobStore,
    jobs: JobRepository,
    bus: EventBus,
    keyed: Restorations,
    database: AsyncIOMotorDatabase,
    face_jpeg: bytes,
) -> None:
    alices = await uploaded(blobs, jobs, bus, face_jpeg, ALICE)
    bobs = await uploaded(blobs, jobs, bus, face_jpeg, BOB)
    await keyed.request(ALICE, alices.image_id, GFPGAN, "k-1")
    await keyed.request(BOB, bobs.image_id, GFPGAN, "k-1")

    await UploadErasure(database, blobs).erase(ALICE)

    left = await database["restoration_requests"].find({}).to_list(None)
    assert [doc["user_id"] for doc in left] == [BOB]
    keys_left = await database["restoration_idempotency_keys"].find({}).to_list(None)
    assert [doc["_id"] for doc in keys_left] == [f"{BOB}:{bobs.image_id}:k-1"]


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


async def test_the_same_idempotency_key_and_options_answer_with_the_first_version_recorded_and_announced_once(
    amqp_url: str,
    blobs: BlobStore,
    jobs: JobRepository,
    bus: EventBus,
    probes: dict[str, str],
    keyed: Restorations,
    database: AsyncIOMotorDatabase,
    face_jpeg: bytes,
) -> None:
    job = await uploaded(blobs, jobs, bus, face_jpeg)
    other = await uploaded(blobs, jobs, bus, face_jpeg)

    first, replayed_first = await keyed.request(ALICE, job.image_id, CODEFORMER, "retry-1")
    again, replayed_again = await keyed.request(ALICE, job.image_id, CODEFORMER, "retry-1")
    # The key is scoped to the image: on another image it is another request.
    elsewhere, replayed_elsewhere = await keyed.request(ALICE, other.image_id, CODEFORMER, "retry-1")
    # And it used up no version id: the image's next request is r3.
    next_one, _ = await keyed.request(ALICE, job.image_id, CODEFORMER)

    assert (first.restoration_id, replayed_first) == ("r2", False)
    assert (again.restoration_id, replayed_again) == ("r2", True)
    assert (again.event_id, again.created_at_ms, again.options) == (first.event_id, first.created_at_ms, first.options)
    assert (elsewhere.image_id, elsewhere.restoration_id, replayed_elsewhere) == (other.image_id, "r2", False)
    assert next_one.restoration_id == "r3"
    assert await database["restoration_requests"].count_documents({"image_id": job.image_id}) == 2
    announced = await take(amqp_url, probes["requests"], 4)
    assert sorted((envelope.restoration_requested.image_id, envelope.event_id) for _, envelope in announced) == sorted(
        [(job.image_id, first.event_id), (other.image_id, elsewhere.event_id), (job.image_id, next_one.event_id)]
    )


async def test_the_same_idempotency_key_with_other_options_is_refused_and_auto_is_compared_as_asked(
    blobs: BlobStore,
    jobs: JobRepository,
    bus: EventBus,
    keyed: Restorations,
    database: AsyncIOMotorDatabase,
    face_jpeg: bytes,
) -> None:
    job = await uploaded(blobs, jobs, bus, face_jpeg)
    await keyed.request(ALICE, job.image_id, CODEFORMER, "k-options")
    # "auto" meant classical at first; a GPU worker has started before the client retries.
    classical = events_pb2.RestorationOptions(model="classical")
    by_auto, _ = await keyed.request(ALICE, job.image_id, classical, "k-auto", requested_model="auto")

    with pytest.raises(Unprocessable) as refused:
        await keyed.request(ALICE, job.image_id, GFPGAN, "k-options")
    auto_again, replayed = await keyed.request(ALICE, job.image_id, GFPGAN, "k-auto", requested_model="auto")

    assert refused.value.reason == "idempotency-key-reused"
    assert (auto_again.restoration_id, replayed) == (by_auto.restoration_id, True)
    assert auto_again.options["model"] == "classical"
    assert await database["restoration_requests"].count_documents({}) == 2


async def test_a_key_whose_request_recorded_nothing_is_in_use_then_taken_over_after_the_lease(
    amqp_url: str,
    blobs: BlobStore,
    jobs: JobRepository,
    bus: EventBus,
    probes: dict[str, str],
    keyed: Restorations,
    database: AsyncIOMotorDatabase,
    face_jpeg: bytes,
) -> None:
    job = await uploaded(blobs, jobs, bus, face_jpeg)
    # The claim was written but that request went no further (its answer lost, its process ended).
    await IdempotencyKeys.for_restorations(database).claim(
        f"{ALICE}:{job.image_id}", "k-lost", options_fingerprint(GFPGAN, ""), "claimed-then-lost"
    )

    with pytest.raises(Conflict) as caught:
        await keyed.request(ALICE, job.image_id, GFPGAN, "k-lost")
    assert caught.value.reason == "idempotency-key-in-use"  # within the lease it may still finish
    await database["restoration_idempotency_keys"].update_one(
        {"_id": f"{ALICE}:{job.image_id}:k-lost"}, {"$inc": {"created_at_ms": -61_000}}
    )
    taken_over, replayed = await keyed.request(ALICE, job.image_id, GFPGAN, "k-lost")
    again, replayed_again = await keyed.request(ALICE, job.image_id, GFPGAN, "k-lost")

    assert (taken_over.event_id, taken_over.restoration_id, replayed) == ("claimed-then-lost", "r2", False)
    assert (again.restoration_id, replayed_again) == ("r2", True)
    [(_, envelope)] = await take(amqp_url, probes["requests"], 2)
    assert envelope.event_id == "claimed-then-lost"


async def test_a_request_whose_caller_went_away_keeps_its_key_so_a_retry_answers_with_it(
    amqp_url: str,
    blobs: BlobStore,
    jobs: JobRepository,
    bus: EventBus,
    probes: dict[str, str],
    keyed: Restorations,
    database: AsyncIOMotorDatabase,
    face_jpeg: bytes,
) -> None:
    # A mobile client's deadline passes while the broker is slow to confirm: the gRPC handler is
    # cancelled, the request goes on, and the client's retry answers with it.
    job = await uploaded(blobs, jobs, bus, face_jpeg)
    publish = bus.publish
    publishing, confirm = asyncio.Event(), asyncio.Event()

    async def slow_confirm(envelope: events_pb2.Envelope) -> None:
        publishing.set()
        await confirm.wait()
        await publish(envelope)

    bus.publish = slow_confirm  # type: ignore[method-assign]
    first = asyncio.ensure_future(keyed.request(ALICE, job.image_id, GFPGAN, "k-timeout"))
    await publishing.wait()
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    confirm.set()
    again, replayed = await keyed.request(ALICE, job.image_id, GFPGAN, "k-timeout")
    await keyed.close()

    assert (again.restoration_id, replayed) == ("r2", True)
    assert await database["restoration_requests"].count_documents({}) == 1
    assert await database["restoration_requests"].count_documents({"published": True}) == 1
    announced = await take(amqp_url, probes["requests"], 2)
    assert [envelope.event_id for _, envelope in announced] == [again.event_id]
