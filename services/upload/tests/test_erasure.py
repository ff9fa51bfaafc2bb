"""Upload's part of erasing an account, over real Mongo (nx-27017), S3 (localbucket) and
RabbitMQ: the user's job records, their originals and their Idempotency-Key claims go; another
user's stay; a redelivered user.deleted finds nothing left to do."""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator
from pathlib import Path

import aio_pika
import pytest
from motor.motor_asyncio import AsyncIOMotorDatabase

from facerestore.events.v1 import events_pb2
from facerestore_common.events import EventBus, new_envelope
from facerestore_common.images import ImageLimits
from facerestore_common.metadata import parse_metadata
from facerestore_common.storage import BlobStore
from upload_service.erasure import UploadErasure
from upload_service.idempotency import IdempotencyKeys
from upload_service.jobs import JobRepository
from upload_service.uploads import Uploads

LIMITS = ImageLimits(max_bytes=1_048_576, max_pixels=40_000_000, max_side=12_000, min_side=64, jpeg_quality=92)
ALICE = "user-alice"
# A user id that starts like Alice's: a prefix match would take his claims too.
ALICE_TWIN = "user-alice-2"


@pytest.fixture
async def bus(amqp_url: str, unique_name: str) -> AsyncIterator[EventBus]:
    event_bus = EventBus(amqp_url, f"{unique_name}.events", unique_name, "upload-test")
    await event_bus.connect()
    yield event_bus
    await event_bus.close()
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        await channel.exchange_delete(f"{unique_name}.events")
        await channel.exchange_delete(event_bus.dead_letter_exchange)


async def test_erasing_a_user_removes_their_jobs_originals_and_key_claims_and_nothing_else(
    database: AsyncIOMotorDatabase, blobs: BlobStore, bus: EventBus
) -> None:
    spec = importlib.util.find_spec("insightface")
    assert spec is not None and spec.origin is not None
    photo = (Path(spec.origin).parent / "data" / "images" / "Tom_Hanks_54745.png").read_bytes()
    jobs = JobRepository(database)
    await jobs.create_indexes()
    uploads = Uploads(blobs, jobs, bus, LIMITS, idempotency=IdempotencyKeys(database))
    mine = [
        (await uploads.accept(ALICE, photo, parse_metadata(["x"], "n", ""), idempotency_key=f"k-{index}"))[0]
        for index in range(3)
    ]
    theirs, _ = await uploads.accept(ALICE_TWIN, photo, parse_metadata([], "", ""), idempotency_key="k-0")
    erasure = UploadErasure(database, blobs, batch=2)

    await erasure(new_envelope("auth", user_deleted=events_pb2.UserDeleted(user_id=ALICE)))

    for job in mine:
        assert await jobs.get(job.image_id) is None
        assert not await blobs.exists(job.original_key)
    assert await database["idempotency_keys"].count_documents({"_id": {"$regex": f"^{ALICE}:"}}) == 0
    assert await jobs.get(theirs.image_id) is not None
    assert await blobs.exists(theirs.original_key)
    assert await database["idempotency_keys"].count_documents({"_id": f"{ALICE_TWIN}:k-0"}) == 1
    assert await erasure.erase(ALICE) == 0
