"""What the inference worker guarantees about deliveries, on the machine's real RabbitMQ and
the MongoDB and S3 stand-ins: a worker killed before its ack leaves exactly one stored
result, a message that always fails ends in the dead-letter queue with image.failed saying
why, an image that kills every worker that takes it ends the same way after a few deaths,
and SIGTERM in the middle of a batch loses nothing.

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

from facerestore.events.v1 import events_pb2
from facerestore_common import mongo
from facerestore_common.events import EventBus, ProcessedEvents, new_envelope
from facerestore_common.settings import BrokerSettings, MongoSettings, StorageSettings
from facerestore_common.storage import BlobStore
from facerestore_common.topology import CONSUMER_BINDINGS
from inference_service.analysis.dlib_analyzer import DlibFaceAnalyzer
from inference_service.pipeline import RestorationPipeline, RestorationResult
from inference_service.restoration.classical import ClassicalRestorer
from inference_service.worker import RestorationWorker, result_keys

USER_ID = "user-1"
WAIT_SECONDS = 30.0
PROBED_EVENTS = ("image.processing", "image.restored", "image.failed")


def make_worker(
    blobs: BlobStore, bus: EventBus, pipeline_class: type[RestorationPipeline] = RestorationPipeline
) -> RestorationWorker:
    """The real worker (classical restorer, dlib analyser): the one place that knows how it is built."""
    pipeline = pipeline_class(ClassicalRestorer(), DlibFaceAnalyzer(), ClassicalRestorer(), 256, 92)
    return RestorationWorker(blobs, bus, pipeline)


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
        return self.bus.queue_name("inference")

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
            **extra,
        }

    def worker_bus(self) -> EventBus:
        return EventBus(self.amqp_url, f"{self.name}.events", self.name, "inference")

    def processed(self) -> ProcessedEvents:
        return ProcessedEvents(self.database["processed_events"], "inference")

    async def upload(self, image_id: str, content: bytes) -> events_pb2.Envelope:
        """Store an original and publish its image.uploaded, as the upload service does."""
        await self.blobs.put(original_key(image_id), content, "image/jpeg")
        envelope = new_envelope(
            "upload",
            image_uploaded=events_pb2.ImageUploaded(
                image_id=image_id, user_id=USER_ID, original_key=original_key(image_id)
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
    await bus.consume("inference", ["image.uploaded"], recording, stack.processed(), 1, on_give_up=worker.give_up)
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
    for queue in bus.consumer_queues("inference"):
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
        "inference",
        ["image.uploaded"],
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
        "inference",
        ["image.uploaded"],
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
    env = stack.env(CONSUMER_PREFETCH="4", RESTORER="classical", LOG_LEVEL="INFO")
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
    for queue in stack.bus.consumer_queues("inference"):
        assert await stack.ready_count(queue) == 0, queue


def _serve_one_message_then_die(kill_point: str) -> None:
    """The killed worker: settings from the environment, the real worker, SIGKILL at kill_point."""

    def die() -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    class DyingPipeline(RestorationPipeline):
        def run(self, content: bytes) -> RestorationResult:
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
        await bus.consume("inference", ["image.uploaded"], handler, processed, 1, on_give_up=worker.give_up)
        await asyncio.sleep(WAIT_SECONDS)
        raise SystemExit(f"no message reached {kill_point}")

    asyncio.run(main())


if __name__ == "__main__":
    _serve_one_message_then_die(sys.argv[1])
