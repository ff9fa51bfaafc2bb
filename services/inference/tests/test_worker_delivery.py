"""What the inference worker guarantees about deliveries, on the machine's real RabbitMQ and
the MongoDB and S3 stand-ins: a worker killed before its ack leaves exactly one stored
result, a message that always fails ends in the dead-letter queue with image.failed saying
why, an image that kills every worker that takes it ends the same way after a few deaths,
and SIGTERM in the middle of a batch loses nothing. And what the options of an event make it
do: versions under keys of their own, refusals, and routing by model (a worker never takes
work for a model it does not serve).

Every test gets its own exchange, queues, database and bucket (named from `unique_name`)
and removes them at the end. The photos come from the insightface wheel (test data only).

Run as a script (`python test_worker_delivery.py after_handler|after_mark|in_pipeline`), this
module is the worker process the tests kill: it takes one message, handles it with the real
RestorationWorker and SIGKILLs itself at that point, before the message is acked (in_pipeline:
in the middle of the restoration, as a native crash or the OOM killer would).
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aio_pika
import cv2
import numpy as np
import pytest
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection
from minio import Minio
from motor.motor_asyncio import AsyncIOMotorDatabase
from redis.asyncio import Redis

from facerestore.events.v1 import events_pb2
from facerestore_common import mongo
from facerestore_common.events import EventBus, ProcessedEvents, new_envelope
from facerestore_common.model_registry import ModelRegistry
from facerestore_common.settings import BrokerSettings, MongoSettings, StorageSettings
from facerestore_common.storage import BlobStore
from facerestore_common.topology import CONSUMER_BINDINGS, LEGACY_INFERENCE_CONSUMER, inference_consumer
from inference_service.analysis.dlib_analyzer import DlibFaceAnalyzer
from inference_service.models import ServedModel, offer_of
from inference_service.pipeline import RestorationPipeline, RestorationResult, RestoreOptions
from inference_service.restoration.classical import ClassicalRestorer
from inference_service.worker import RestorationWorker, result_keys

USER_ID = "user-1"
WAIT_SECONDS = 30.0
PROBED_EVENTS = ("image.processing", "image.restored", "image.failed")
# The worker under test serves classical: its queue, and the bindings the platform gives it.
CONSUMER = inference_consumer("classical")
BINDINGS = list(CONSUMER_BINDINGS[CONSUMER])


def make_worker(
    blobs: BlobStore, bus: EventBus, pipeline_class: type[RestorationPipeline] = RestorationPipeline
) -> RestorationWorker:
    """The real worker (classical restorer, dlib analyser): the one place that knows how it is built."""
    pipeline = pipeline_class(ClassicalRestorer(), DlibFaceAnalyzer(), ClassicalRestorer(), 256, 92)
    offer = offer_of(ServedModel("classical", pipeline.restorer, "test"))
    return RestorationWorker(blobs, bus, {"classical": pipeline}, {"classical": offer}, "classical")


def face_photo() -> bytes:
    spec = importlib.util.find_spec("insightface")
    if spec is None or spec.origin is None:
        pytest.fail("test photos missing: pip install --no-deps insightface==2.1")
    return (Path(spec.origin).parent / "data" / "images" / "t1.jpg").read_bytes()


def original_key(image_id: str) -> str:
    return f"originals/{USER_ID}/{image_id}.jpg"


def closed_port() -> int:
    """A port nothing listens on: connecting to it is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Probe:
    """Collects every image.processing / image.restored / image.failed the stack publishes."""

    events: list[events_pb2.Envelope] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        self.events.append(events_pb2.Envelope.FromString(message.body))
        self.changed.set()

    def of(self, event_type: str, image_id: str | None = None) -> list[events_pb2.Envelope]:
        payload = event_type.replace(".", "_")
        return [
            envelope
            for envelope in self.events
            if envelope.type == event_type and image_id in (None, getattr(envelope, payload).image_id)
        ]

    async def wait_for(self, condition: Callable[[Probe], bool], what: str, within: float = WAIT_SECONDS) -> None:
        deadline = time.monotonic() + within
        while not condition(self):
            self.changed.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                got = [envelope.type for envelope in self.events]
                raise AssertionError(f"{what}: not seen within {within} s; got {got}")
            try:
                await asyncio.wait_for(self.changed.wait(), remaining)
            except TimeoutError:
                continue

    async def quiet(self, seconds: float = 1.0) -> None:
        """Wait until nothing has arrived for `seconds`: events published (and confirmed) by a
        process that has since exited may still be on their way to the probe."""
        while True:
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), seconds)
            except TimeoutError:
                return


@dataclass
class Stack:
    """A namespace on the shared broker plus a database and a bucket, and a look into them."""

    name: str
    amqp_url: str
    mongo_url: str
    s3_endpoint: str
    bus: EventBus
    blobs: BlobStore
    database: AsyncIOMotorDatabase
    inspector: AbstractRobustConnection
    probe: Probe
    s3: Minio

    @property
    def bucket(self) -> str:
        return self.blobs.bucket

    @property
    def queue(self) -> str:
        return self.bus.queue_name(CONSUMER)

    def env(self, **extra: str) -> dict[str, str]:
        """Settings for a worker process, by the service's own variable names."""
        return {
            **os.environ,
            "AMQP_URL": self.amqp_url,
            "EVENTS_EXCHANGE": f"{self.name}.events",
            "QUEUE_PREFIX": self.name,
            "MONGO_URL": self.mongo_url,
            "MONGO_DATABASE": self.name,
            "S3_ENDPOINT": self.s3_endpoint,
            "S3_BUCKET": self.bucket,
            "METRICS_PORT": "0",
            "REDIS_KEY_PREFIX": self.name,
            **extra,
        }

    def worker_bus(self) -> EventBus:
        return EventBus(self.amqp_url, f"{self.name}.events", self.name, "inference")

    def processed(self) -> ProcessedEvents:
        return ProcessedEvents(self.database["processed_events"], "inference")

    async def upload(
        self, image_id: str, content: bytes, options: events_pb2.RestorationOptions | None = None
    ) -> events_pb2.Envelope:
        """Store an original and publish its image.uploaded, as the upload service does."""
        await self.blobs.put(original_key(image_id), content, "image/jpeg")
        envelope = new_envelope(
            "upload",
            image_uploaded=events_pb2.ImageUploaded(
                image_id=image_id,
                user_id=USER_ID,
                original_key=original_key(image_id),
                restoration_id="r1",
                options=options or events_pb2.RestorationOptions(model="classical"),
            ),
        )
        await self.bus.publish(envelope)
        return envelope

    async def reprocess(
        self, image_id: str, restoration_id: str, options: events_pb2.RestorationOptions
    ) -> events_pb2.Envelope:
        """Publish a restoration.requested for a stored original, as a reprocess does."""
        envelope = new_envelope(
            "upload",
            restoration_requested=events_pb2.RestorationRequested(
                image_id=image_id,
                user_id=USER_ID,
                restoration_id=restoration_id,
                original_key=original_key(image_id),
                options=options,
            ),
        )
        await self.bus.publish(envelope)
        return envelope

    async def ready_count(self, queue: str) -> int:
        """Messages waiting in a queue (unacked ones are not counted until their channel closes)."""
        channel = await self.inspector.channel()
        try:
            declared = await channel.declare_queue(queue, passive=True)
            return int(declared.declaration_result.message_count or 0)
        finally:
            await channel.close()

    async def ready_count_settles_at(self, queue: str, expected: int, within: float = 10.0) -> int:
        """The ready count once it reaches `expected` (or whatever it is after `within`): the broker
        returns a dead connection's unacked messages a moment after the process is gone."""
        deadline = time.monotonic() + within
        count = await self.ready_count(queue)
        while count != expected and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            count = await self.ready_count(queue)
        return count

    async def take(self, queue: str, within: float = WAIT_SECONDS) -> AbstractIncomingMessage:
        channel = await self.inspector.channel()
        try:
            source = await channel.get_queue(queue, ensure=False)
            deadline = time.monotonic() + within
            while time.monotonic() < deadline:
                message = await source.get(no_ack=True, fail=False)
                if message is not None:
                    return message
                await asyncio.sleep(0.1)
            raise AssertionError(f"nothing arrived in {queue} within {within} s")
        finally:
            await channel.close()

    async def keys_of(self, image_id: str) -> set[str]:
        """Every object in the bucket whose key names the image."""

        def listing() -> set[str]:
            return {
                str(item.object_name)
                for item in self.s3.list_objects(self.bucket, recursive=True)
                if image_id in str(item.object_name)
            }

        return await asyncio.to_thread(listing)

    async def processed_ids(self) -> set[str]:
        return {str(document["_id"]) async for document in self.database["processed_events"].find({})}


@pytest.fixture
async def stack(amqp_url: str, mongo_url: str, s3_endpoint: str, unique_name: str) -> AsyncIterator[Stack]:
    storage = StorageSettings(s3_endpoint=s3_endpoint, s3_bucket=f"{unique_name}-images")
    blobs = BlobStore(storage)
    await blobs.ensure_bucket()
    s3 = Minio(
        storage.s3_endpoint,
        access_key=storage.s3_access_key.get_secret_value(),
        secret_key=storage.s3_secret_key.get_secret_value(),
        secure=storage.s3_secure,
        region=storage.s3_region,
    )
    # The platform's own topology: the inference queue exists before anything is published.
    bus = EventBus(amqp_url, f"{unique_name}.events", unique_name, "upload-test", topology=CONSUMER_BINDINGS)
    await bus.connect()
    inspector = await aio_pika.connect_robust(amqp_url)
    probe_channel = await inspector.channel()
    probe_queue = await probe_channel.declare_queue(f"{unique_name}.probe", durable=False, auto_delete=False)
    for key in PROBED_EVENTS:
        await probe_queue.bind(f"{unique_name}.events", routing_key=key)
    probe = Probe()
    await probe_queue.consume(probe.on_message, no_ack=True)
    database = mongo.connect(mongo_url, unique_name)
    state = Stack(unique_name, amqp_url, mongo_url, s3_endpoint, bus, blobs, database, inspector, probe, s3)
    try:
        yield state
    finally:
        await bus.close()
        await probe_channel.close()
        channel = await inspector.channel()
        await channel.queue_delete(f"{unique_name}.probe")
        for consumer in CONSUMER_BINDINGS:
            for queue in bus.consumer_queues(consumer):
                await channel.queue_delete(queue)
        await channel.exchange_delete(f"{unique_name}.events")
        await channel.exchange_delete(bus.dead_letter_exchange)
        await inspector.close()
        await database.client.drop_database(unique_name)
        database.client.close()

        def empty_bucket() -> None:
            for item in s3.list_objects(storage.s3_bucket, recursive=True):
                s3.remove_object(storage.s3_bucket, str(item.object_name))
            s3.remove_bucket(storage.s3_bucket)

        await asyncio.to_thread(empty_bucket)


async def start(argv: list[str], env: dict[str, str], log: Path) -> asyncio.subprocess.Process:
    """A worker process whose output goes to `log`, read back when an assertion fails."""
    with log.open("wb") as sink:
        return await asyncio.create_subprocess_exec(*argv, env=env, stdout=sink, stderr=asyncio.subprocess.STDOUT)


async def wait_for_exit(process: asyncio.subprocess.Process, within: float = 60.0) -> int:
    try:
        return await asyncio.wait_for(process.wait(), within)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError("the worker process did not exit in time") from None


def output_of(log: Path) -> str:
    return log.read_text(errors="replace")[-4000:]


@pytest.mark.parametrize("kill_point", ["after_handler", "after_mark"])
async def test_worker_killed_before_its_ack_leaves_exactly_one_stored_result_after_redelivery(
    stack: Stack, tmp_path: Path, kill_point: str
) -> None:
    """Killed after the worker's side effects (after_handler: before the event id was recorded;
    after_mark: recorded, only the ack missing). "Exactly one stored result" means: the broker
    hands the message to the next worker, the image ends with one set of result objects at the
    keys derived from its id (a re-run overwrites them, never adds a second set), every
    image.restored names those keys, no image.failed is published, the event id is recorded once,
    and nothing is left in any queue. A recorded event is not run again (one image.restored); an
    unrecorded one is, and its second image.restored points at the same, overwritten result."""
    photo = face_photo()
    image_id = f"img-{kill_point}"
    envelope = await stack.upload(image_id, photo)
    log = tmp_path / "killed-worker.log"
    process = await start([sys.executable, __file__, kill_point], stack.env(), log)
    code = await wait_for_exit(process)

    assert code == -signal.SIGKILL, f"the worker did not die at {kill_point}:\n{output_of(log)}"
    # The worker's side effects were done: the result is stored and announced...
    await stack.probe.quiet()
    assert len(stack.probe.of("image.restored", image_id)) == 1
    assert await stack.keys_of(image_id) == {original_key(image_id), *result_keys(image_id)}
    # ...but the message was never acked, so the broker put it back.
    assert await stack.ready_count_settles_at(stack.queue, 1) == 1
    assert await stack.processed().seen(envelope.event_id) is (kill_point == "after_mark")

    handled: list[str] = []
    bus = stack.worker_bus()
    await bus.connect()
    worker = make_worker(stack.blobs, bus)

    async def recording(got: events_pb2.Envelope) -> None:
        handled.append(got.image_uploaded.image_id)
        await worker(got)

    # Prefetch 1: the sentinel is delivered only once the redelivered message was settled.
    await bus.consume(CONSUMER, BINDINGS, recording, stack.processed(), 1, on_give_up=worker.give_up)
    sentinel = await stack.upload("img-sentinel", photo)
    await stack.probe.wait_for(lambda probe: bool(probe.of("image.restored", "img-sentinel")), "sentinel restored")
    await bus.close()
    await stack.probe.quiet()

    if kill_point == "after_mark":
        assert handled == ["img-sentinel"]  # recorded as handled: acked without running again
    else:
        assert handled == [image_id, "img-sentinel"]  # not recorded: run again, idempotently
    restored = stack.probe.of("image.restored", image_id)
    assert len(restored) == len([got for got in handled if got == image_id]) + 1
    # A repeated outcome carries the same event id, so the history applies it once.
    assert len({event.event_id for event in restored}) == 1
    for event in restored:
        assert (
            event.image_restored.restored_key,
            event.image_restored.original_thumbnail_key,
            event.image_restored.restored_thumbnail_key,
        ) == result_keys(image_id)
        assert event.image_restored.user_id == USER_ID
    assert stack.probe.of("image.failed") == []
    assert await stack.keys_of(image_id) == {original_key(image_id), *result_keys(image_id)}
    restored_image = cv2.imdecode(
        np.frombuffer(await stack.blobs.get(result_keys(image_id)[0]), dtype=np.uint8), cv2.IMREAD_COLOR
    )
    original = cv2.imdecode(np.frombuffer(photo, dtype=np.uint8), cv2.IMREAD_COLOR)
    assert restored_image is not None
    assert original is not None
    assert restored_image.shape == original.shape  # a whole restored photo, not a stub
    assert await stack.processed_ids() == {f"inference:{envelope.event_id}", f"inference:{sentinel.event_id}"}
    for queue in bus.consumer_queues(CONSUMER):
        assert await stack.ready_count(queue) == 0, queue


async def test_message_that_always_fails_is_dead_lettered_after_max_attempts_and_the_image_fails_with_a_reason(
    stack: Stack,
) -> None:
    # Storage that refuses every connection: each attempt fails the same transient way.
    unreachable = BlobStore(StorageSettings(s3_endpoint=f"127.0.0.1:{closed_port()}", s3_bucket=stack.bucket))
    bus = stack.worker_bus()
    await bus.connect()
    worker = make_worker(unreachable, bus)
    await bus.consume(
        CONSUMER,
        BINDINGS,
        worker,
        stack.processed(),
        1,
        max_attempts=3,
        retry_base_seconds=0.2,
        on_give_up=worker.give_up,
    )
    envelope = await stack.upload("img-doomed", face_photo())

    dead = await stack.take(f"{stack.queue}.dlq", within=120.0)
    await bus.close()
    await stack.probe.quiet()

    assert events_pb2.Envelope.FromString(dead.body) == envelope
    assert dead.headers["x-attempt"] == 3
    # One image.processing per attempt, then one image.failed saying why, and no result.
    assert len(stack.probe.of("image.processing", "img-doomed")) == 3
    (failed,) = stack.probe.of("image.failed", "img-doomed")
    assert failed.image_failed.reason.startswith("retries_exhausted: ")
    assert failed.image_failed.reason != "retries_exhausted: "
    assert failed.image_failed.user_id == USER_ID
    assert failed.image_failed.detail
    assert stack.probe.of("image.restored") == []
    assert await stack.keys_of("img-doomed") == {original_key("img-doomed")}
    # Not recorded as handled, so a replay from the dead-letter queue would be worked on.
    assert not await stack.processed().seen(envelope.event_id)
    assert await stack.ready_count(stack.queue) == 0
    assert await stack.ready_count(f"{stack.queue}.retry") == 0


async def test_image_that_kills_every_worker_fails_after_the_limit_and_the_queue_moves_on(
    stack: Stack, tmp_path: Path
) -> None:
    photo = face_photo()
    deadly = await stack.upload("img-deadly", photo)
    for life in range(2):
        log = tmp_path / f"dying-worker-{life}.log"
        process = await start([sys.executable, __file__, "in_pipeline"], stack.env(), log)
        code = await wait_for_exit(process)
        assert code == -signal.SIGKILL, f"the worker did not die in the pipeline:\n{output_of(log)}"
        assert await stack.ready_count_settles_at(stack.queue, 1) == 1  # back for the next worker

    bus = stack.worker_bus()
    await bus.connect()
    worker = make_worker(stack.blobs, bus)
    await bus.consume(
        CONSUMER,
        BINDINGS,
        worker,
        stack.processed(),
        1,
        max_unfinished_deliveries=2,
        on_give_up=worker.give_up,
    )
    await stack.upload("img-sentinel", photo)
    dead = await stack.take(f"{stack.queue}.dlq")
    await stack.probe.wait_for(lambda probe: bool(probe.of("image.restored", "img-sentinel")), "sentinel restored")
    await bus.close()
    await stack.probe.quiet()

    assert events_pb2.Envelope.FromString(dead.body) == deadly
    # Started by each worker that died on it, never by the third, which gave it up instead.
    assert len(stack.probe.of("image.processing", "img-deadly")) == 2
    (failed,) = stack.probe.of("image.failed", "img-deadly")
    assert failed.image_failed.reason.startswith("redelivery_limit: 2 deliveries ended without an outcome")
    assert failed.image_failed.detail == "the restoration stopped the worker every time it was tried; it was given up"
    assert failed.image_failed.user_id == USER_ID
    assert stack.probe.of("image.restored", "img-deadly") == []
    assert await stack.keys_of("img-deadly") == {original_key("img-deadly")}
    assert not await stack.processed().seen(deadly.event_id)
    for queue in (stack.queue, f"{stack.queue}.retry", f"{stack.queue}.dlq"):
        assert await stack.ready_count(queue) == 0, queue


async def test_sigterm_in_the_middle_of_a_batch_loses_nothing_and_does_nothing_twice(
    stack: Stack, tmp_path: Path
) -> None:
    photo = face_photo()
    image_ids = [f"img-{index}" for index in range(8)]
    for image_id in image_ids:
        await stack.upload(image_id, photo)
    env = stack.env(CONSUMER_PREFETCH="4", RESTORERS="classical", LOG_LEVEL="INFO")
    argv = [sys.executable, "-m", "inference_service.main"]

    first_log = tmp_path / "first.log"
    first = await start(argv, env, first_log)
    try:
        await stack.probe.wait_for(lambda probe: bool(probe.of("image.processing")), "first image.processing")
    except AssertionError:
        first.kill()
        await first.wait()
        raise AssertionError(f"the service never started working:\n{output_of(first_log)}") from None
    first.send_signal(signal.SIGTERM)
    first_code = await wait_for_exit(first)
    assert first_code == 0, output_of(first_log)
    await stack.probe.quiet()

    started = {envelope.image_processing.image_id for envelope in stack.probe.of("image.processing")}
    finished = {envelope.image_restored.image_id for envelope in stack.probe.of("image.restored")}
    # Stopped mid-batch, yet every image it had started was finished, stored and acked...
    assert 1 <= len(finished) < len(image_ids), "SIGTERM did not land in the middle of the batch"
    assert started == finished
    # ...and every other one is back in the queue, none dead-lettered.
    left = len(image_ids) - len(finished)
    assert await stack.ready_count_settles_at(stack.queue, left) == left
    assert await stack.ready_count(f"{stack.queue}.dlq") == 0

    second_log = tmp_path / "second.log"
    second = await start(argv, env, second_log)
    try:
        await stack.probe.wait_for(
            lambda probe: all(probe.of("image.restored", image_id) for image_id in image_ids),
            "every image restored",
            within=120.0,
        )
    finally:
        second.send_signal(signal.SIGTERM)
        second_code = await wait_for_exit(second)
    assert second_code == 0, output_of(second_log)
    await stack.probe.quiet()

    for image_id in image_ids:
        assert len(stack.probe.of("image.restored", image_id)) == 1, image_id
        assert await stack.keys_of(image_id) == {original_key(image_id), *result_keys(image_id)}, image_id
    assert stack.probe.of("image.failed") == []
    assert len(await stack.processed_ids()) == len(image_ids)
    for queue in stack.bus.consumer_queues(CONSUMER):
        assert await stack.ready_count(queue) == 0, queue


async def test_a_reprocess_restores_the_chosen_face_into_a_version_of_its_own_with_its_options(
    stack: Stack,
) -> None:
    photo = face_photo()
    bus = stack.worker_bus()
    await bus.connect()
    worker = make_worker(stack.blobs, bus)
    await bus.consume(CONSUMER, BINDINGS, worker, stack.processed(), 1, on_give_up=worker.give_up)
    await stack.upload("img-versions", photo)
    await stack.probe.wait_for(lambda probe: bool(probe.of("image.restored", "img-versions")), "first version")
    first_version = await stack.blobs.get(result_keys("img-versions")[0])

    asked = events_pb2.RestorationOptions(model="classical", faces=[1, 9], upscale=2)
    await stack.reprocess("img-versions", "r2", asked)
    await stack.probe.wait_for(lambda probe: len(probe.of("image.restored", "img-versions")) == 2, "second version")
    await bus.close()
    await stack.probe.quiet()

    first, second = (envelope.image_restored for envelope in stack.probe.of("image.restored", "img-versions"))
    assert (first.restoration_id, second.restoration_id) == ("r1", "r2")
    assert [envelope.image_processing.restoration_id for envelope in stack.probe.of("image.processing")] == [
        "r1",
        "r2",
    ]
    keys = result_keys("img-versions", "r2")
    assert keys == (
        "restored/img-versions/r2.jpg",
        "thumbnails/img-versions-original.jpg",
        "thumbnails/img-versions/r2-restored.jpg",
    )
    assert (second.restored_key, second.original_thumbnail_key, second.restored_thumbnail_key) == keys
    # The options as applied: classical has no fidelity dial, so none is reported.
    assert second.options == asked and not second.options.HasField("fidelity")
    assert first.options == events_pb2.RestorationOptions(model="classical", upscale=1)
    assert list(second.warnings) == ["face-index-out-of-range:9"]
    assert len(second.face_details) == 6  # every face is listed, restored or not
    assert await stack.keys_of("img-versions") == {original_key("img-versions"), *result_keys("img-versions"), *keys}
    # The first version is left as it was; the second is twice the original's size.
    assert await stack.blobs.get(result_keys("img-versions")[0]) == first_version
    original = cv2.imdecode(np.frombuffer(photo, np.uint8), cv2.IMREAD_COLOR)
    restored = cv2.imdecode(np.frombuffer(await stack.blobs.get(keys[0]), np.uint8), cv2.IMREAD_COLOR)
    assert original is not None and restored is not None
    assert restored.shape == (2 * original.shape[0], 2 * original.shape[1], 3)
    assert stack.probe.of("image.failed") == []


async def test_a_fidelity_for_a_model_without_that_dial_fails_the_version_at_once_saying_so(stack: Stack) -> None:
    bus = stack.worker_bus()
    await bus.connect()
    worker = make_worker(stack.blobs, bus)
    await bus.consume(CONSUMER, BINDINGS, worker, stack.processed(), 1, max_attempts=3, on_give_up=worker.give_up)
    asked = events_pb2.RestorationOptions(model="classical", fidelity=0.3)
    await stack.upload("img-fidelity", face_photo(), asked)
    await stack.probe.wait_for(lambda probe: bool(probe.of("image.failed", "img-fidelity")), "image.failed")
    await bus.close()
    await stack.probe.quiet()

    (failed,) = stack.probe.of("image.failed", "img-fidelity")
    assert failed.image_failed.reason == "option_unsupported"
    assert failed.image_failed.detail == "classical has no fidelity setting"
    assert (failed.image_failed.restoration_id, failed.image_failed.options) == ("r1", asked)
    # Refused at once: one attempt, no result, nothing parked or dead-lettered.
    assert len(stack.probe.of("image.processing", "img-fidelity")) == 1
    assert await stack.keys_of("img-fidelity") == {original_key("img-fidelity")}
    for queue in bus.consumer_queues(CONSUMER):
        assert await stack.ready_count(queue) == 0, queue


async def test_a_classical_only_worker_never_takes_codeformer_work_drains_the_old_queue_and_offers_only_classical(
    stack: Stack, tmp_path: Path, redis_url: str
) -> None:
    """The real worker process with RESTORERS=classical. A codeformer upload waits in its own
    durable queue for a worker that has the model; the classical one is restored; an event from
    before options existed, left in the old single inference queue, is restored too."""
    photo = face_photo()
    legacy_queue = stack.bus.queue_name(LEGACY_INFERENCE_CONSUMER)
    await stack.bus.declare_queue(LEGACY_INFERENCE_CONSUMER, ["image.uploaded"])  # as the old release left it
    await stack.upload("img-codeformer", photo, events_pb2.RestorationOptions(model="codeformer", fidelity=0.7))
    await stack.upload("img-classical", photo)
    await stack.blobs.put(original_key("img-old"), photo, "image/jpeg")
    old = events_pb2.ImageUploaded(image_id="img-old", user_id=USER_ID, original_key=original_key("img-old"))
    await stack.bus.publish(new_envelope("upload", image_uploaded=old))
    redis = Redis.from_url(redis_url)
    registry = ModelRegistry(redis, stack.name)
    log = tmp_path / "classical-worker.log"
    process = await start(
        [sys.executable, "-m", "inference_service.main"],
        stack.env(RESTORERS="classical", INFERENCE_ROLES="restore", FACE_ANALYZER="dlib", WORKER_ID="cpu-1"),
        log,
    )
    try:
        try:
            await stack.probe.wait_for(
                lambda probe: bool(
                    probe.of("image.restored", "img-classical") and probe.of("image.restored", "img-old")
                ),
                "the classical and the old upload restored",
                within=120.0,
            )
        except AssertionError as error:
            raise AssertionError(f"{error}\n{output_of(log)}") from None
        offered = await registry.available()
    finally:
        process.send_signal(signal.SIGTERM)
        code = await wait_for_exit(process)
    assert code == 0, output_of(log)
    await stack.probe.quiet()

    assert set(offered) == {"classical"} and offered["classical"].model_id == "classical-opencv-v2"
    assert await registry.available() == {}  # withdrawn when it stopped
    (legacy,) = stack.probe.of("image.restored", "img-old")
    assert legacy.image_restored.options.model == "classical" and legacy.image_restored.restoration_id == "r1"
    # The codeformer upload was never touched: still waiting in its own queue, for its model.
    assert stack.probe.of("image.processing", "img-codeformer") == []
    assert stack.probe.of("image.failed") == []
    waiting = await stack.take(stack.bus.queue_name(inference_consumer("codeformer")))
    assert events_pb2.Envelope.FromString(waiting.body).image_uploaded.image_id == "img-codeformer"
    for queue in (stack.queue, legacy_queue):
        assert await stack.ready_count(queue) == 0, queue
    channel = await stack.inspector.channel()
    for queue in stack.bus.consumer_queues(LEGACY_INFERENCE_CONSUMER):
        await channel.queue_delete(queue)
    await channel.close()
    await redis.aclose()


def _serve_one_message_then_die(kill_point: str) -> None:
    """The killed worker: settings from the environment, the real worker, SIGKILL at kill_point."""

    def die() -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    class DyingPipeline(RestorationPipeline):
        def run(self, content: bytes, options: RestoreOptions | None = None) -> RestorationResult:
            die()
            raise AssertionError("unreachable")

    class RecordThenDie(ProcessedEvents):
        async def mark(self, event_id: str) -> None:
            await super().mark(event_id)
            if kill_point == "after_mark":
                die()

    async def main() -> None:
        broker, storage, database_settings = BrokerSettings(), StorageSettings(), MongoSettings()
        database = mongo.connect(database_settings.mongo_url, database_settings.mongo_database)
        bus = EventBus(broker.amqp_url.get_secret_value(), broker.events_exchange, broker.queue_prefix, "inference")
        await bus.connect()
        worker = make_worker(
            BlobStore(storage), bus, DyingPipeline if kill_point == "in_pipeline" else RestorationPipeline
        )

        async def handler(envelope: events_pb2.Envelope) -> None:
            await worker(envelope)
            if kill_point == "after_handler":
                die()

        processed = RecordThenDie(database["processed_events"], "inference")
        await bus.consume(CONSUMER, BINDINGS, handler, processed, 1, on_give_up=worker.give_up)
        await asyncio.sleep(WAIT_SECONDS)
        raise SystemExit(f"no message reached {kill_point}")

    asyncio.run(main())


if __name__ == "__main__":
    _serve_one_message_then_die(sys.argv[1])
