"""The outbox backlog as Prometheus sees it: accepted uploads whose `image.uploaded` the broker
has not confirmed yet, and the age of the oldest one, measured on the Mongo stand-in."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from motor.motor_asyncio import AsyncIOMotorDatabase
from prometheus_client import REGISTRY

from facerestore_common import mongo
from facerestore_common.timeutil import now_ms
from upload_service.jobs import Job, JobRepository
from upload_service.outbox import OutboxRelay


@pytest.fixture
async def jobs(mongo_url: str, unique_name: str) -> AsyncIterator[JobRepository]:
    database: AsyncIOMotorDatabase = mongo.connect(mongo_url, unique_name)
    repository = JobRepository(database)
    await repository.create_indexes()
    yield repository
    database.client.close()


def job(image_id: str, created_at_ms: int) -> Job:
    return Job(
        image_id=image_id,
        user_id="user-1",
        original_key=f"originals/{image_id}.jpg",
        content_type="image/jpeg",
        width=64,
        height=64,
        size_bytes=1000,
        sha256="ab" * 32,
        tags=[],
        note="",
        location="",
        created_at_ms=created_at_ms,
        event_id=f"event-{image_id}",
        next_publish_at_ms=created_at_ms,
    )


def gauge(name: str) -> float | None:
    return REGISTRY.get_sample_value(name, {"outbox": "image.uploaded"})


async def test_the_backlog_counts_unconfirmed_uploads_and_the_oldest_ones_age(jobs: JobRepository) -> None:
    now = now_ms()
    await jobs.insert(job("old", now - 90_000))
    await jobs.insert(job("new", now - 1_000))
    await jobs.insert(job("sent", now - 500_000))
    await jobs.mark_published("sent")
    relay = OutboxRelay(jobs, uploads=None, interval_seconds=1, retry_delay_ms=1000)  # type: ignore[arg-type]

    await relay.measure()
    assert gauge("outbox_backlog_events") == 2
    age = gauge("outbox_oldest_event_age_seconds")
    assert age is not None and 90 <= age < 120

    await jobs.mark_published("old")
    await jobs.mark_published("new")
    await relay.measure()
    assert gauge("outbox_backlog_events") == 0
    assert gauge("outbox_oldest_event_age_seconds") == 0
