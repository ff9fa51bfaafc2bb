"""A history process killed half-way through erasing a user (SIGKILL: no cleanup, no ack) leaves
the rest of the work to the next process, which finishes it: the broker hands the unacked
user.deleted out again, and the erasure goes on from the images still there.

The service runs as it does in production (`python -m history_service.main`) against the real
Mongo and S3 stand-ins and RabbitMQ; the test plays upload and inference by publishing their
events and storing their files, and auth by publishing user.deleted."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aio_pika
import pytest
from motor.motor_asyncio import AsyncIOMotorDatabase

from facerestore.events.v1 import events_pb2
from facerestore_common.events import EventBus, new_envelope
from facerestore_common.pseudonym import pseudonym
from facerestore_common.storage import BlobStore
from facerestore_common.topology import CONSUMER_BINDINGS, embed_queue_name

ALICE = "user-alice-erase-resume"
BOB = "user-bob-erase-resume"
SECRET = "erase-resume-pseudonym-secret"
IMAGES = 120


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class HistoryProcess:
    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self._env = env
        self._log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self._log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "history_service.main"], env=self._env, stdout=log, stderr=subprocess.STDOUT
            )

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log(self) -> str:
        return self._log_path.read_text(errors="replace")[-4000:]


@pytest.fixture
def history_env(mongo_url: str, s3_endpoint: str, amqp_url: str, unique_name: str, tmp_path: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("MONGO", "S3_", "QUEUE", "EVENTS"))}
    env.update(
        MONGO_URL=mongo_url,
        MONGO_DATABASE=unique_name,
        S3_ENDPOINT=s3_endpoint,
        S3_BUCKET=f"h-{unique_name}",
        AMQP_URL=amqp_url,
        EVENTS_EXCHANGE=f"{unique_name}.events",
        QUEUE_PREFIX=unique_name,
        GRPC_PORT=str(_free_port()),
        METRICS_PORT="0",
        FACE_INDEX_PATH=str(tmp_path / "face-index"),
        PSEUDONYM_SECRET=SECRET,
        LOG_LEVEL="INFO",
        PYTHONUNBUFFERED="1",
    )
    return env


@pytest.fixture
def history_process(history_env: dict[str, str], tmp_path: Path) -> Iterator[HistoryProcess]:
    process = HistoryProcess(history_env, tmp_path / "history.log")
    yield process
    process.stop()


@pytest.fixture
async def events_bus(amqp_url: str, unique_name: str) -> AsyncIterator[EventBus]:
    bus = EventBus(amqp_url, f"{unique_name}.events", unique_name, "test", topology=CONSUMER_BINDINGS)
    await bus.connect()
    yield bus
    await bus.close()
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        for consumer in CONSUMER_BINDINGS:
            for queue in bus.consumer_queues(consumer):
                await channel.queue_delete(queue)
        await channel.queue_delete(embed_queue_name(unique_name))
        for exchange in (f"{unique_name}.events", bus.dead_letter_exchange):
            await channel.exchange_delete(exchange)


async def add_restored_image(bus: EventBus, blobs: BlobStore, image_id: str, user_id: str) -> list[str]:
    uploaded = events_pb2.ImageUploaded(
        image_id=image_id, user_id=user_id, original_key=f"originals/{image_id}.jpg", content_type="image/jpeg"
    )
    uploaded.created_at.GetCurrentTime()
    restored = events_pb2.ImageRestored(
        image_id=image_id,
        user_id=user_id,
        restored_key=f"restored/{image_id}.jpg",
        original_thumbnail_key=f"thumbnails/{image_id}-original.jpg",
        restored_thumbnail_key=f"thumbnails/{image_id}-restored.jpg",
        backend="classical",
    )
    keys = [
        uploaded.original_key,
        restored.restored_key,
        restored.original_thumbnail_key,
        restored.restored_thumbnail_key,
    ]
    for key in keys:
        await blobs.put(key, f"{key} of {user_id}".encode(), "image/jpeg")
    await bus.publish(new_envelope("upload", image_uploaded=uploaded))
    await bus.publish(new_envelope("inference", image_restored=restored))
    return keys


async def wait_for(condition: object, seconds: float, what: str, process: HistoryProcess) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await condition():  # type: ignore[operator]
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{what} did not happen within {seconds}s; history's log:\n{process.log()}")


async def test_an_erasure_cut_short_by_a_killed_process_is_finished_by_the_next_one(
    history_process: HistoryProcess, events_bus: EventBus, database: AsyncIOMotorDatabase, blobs: BlobStore
) -> None:
    alice_keys: list[str] = []
    for index in range(IMAGES):
        alice_keys += await add_restored_image(events_bus, blobs, f"alice-{index:03d}", ALICE)
    bob_keys = [key for index in range(3) for key in await add_restored_image(events_bus, blobs, f"bob-{index}", BOB)]
    items = database["items"]

    async def alice_items() -> int:
        return await items.count_documents({"user_id": ALICE})

    history_process.start()

    async def all_projected() -> bool:
        return await items.count_documents({"status": "done", "sort_key": {"$gt": ""}}) == IMAGES + 3

    await wait_for(all_projected, 120, "projecting every image", history_process)

    await events_bus.publish(new_envelope("auth", user_deleted=events_pb2.UserDeleted(user_id=ALICE)))

    async def erasure_started() -> bool:
        return await alice_items() < IMAGES

    await wait_for(erasure_started, 60, "the erasure starting", history_process)
    history_process.kill()

    # Half-way: some of Alice's images are gone, others are still there with their files.
    left = await alice_items()
    assert 0 < left < IMAGES, left
    marker = await database["erased_users"].find_one({"_id": pseudonym(SECRET, ALICE)})
    assert marker is not None and marker["state"] == "erasing"
    remaining_files = [key for key in alice_keys if await blobs.exists(key)]
    assert remaining_files, "the kill came after every file was gone"

    history_process.start()

    async def erasure_done() -> bool:
        doc = await database["erased_users"].find_one({"_id": pseudonym(SECRET, ALICE)})
        return doc is not None and doc.get("state") == "done"

    await wait_for(erasure_done, 90, "the erasure finishing after the restart", history_process)

    assert await alice_items() == 0
    assert await database["faces"].count_documents({"user_id": ALICE}) == 0
    for key in alice_keys:
        assert not await blobs.exists(key), key
    assert await items.count_documents({"user_id": BOB}) == 3
    for key in bob_keys:
        assert await blobs.exists(key), key
