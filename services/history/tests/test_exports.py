"""Exports over real Mongo (nx-27017), S3 (localbucket) and RabbitMQ: the archive streamed into
the bucket (in parts when it is larger than one), byte-identical files and metadata naming
every item, a crashed worker's job taken over, links that expire, archives deleted after their
retention."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import time
import zipfile
from types import SimpleNamespace

import jwt
import pytest
from motor.motor_asyncio import AsyncIOMotorDatabase

from facerestore_common.errors import NotFound
from facerestore_common.storage import BlobStore
from facerestore_common.timeutil import now_ms
from history_service.consumer import HistoryProjector
from history_service.export_archive import ArchiveWriter, ExportEntry
from history_service.exports import (
    Exporter,
    ExportJobs,
    ExportLinks,
    Exports,
    ExportSettings,
    ExportSource,
    ExportWorker,
    archive_key,
)

ALICE = "user-alice"
BOB = "user-bob"
BASE_MS = 1_700_000_000_000
LINK_SECRET = "export-tests-link-secret-0123456789abcdef"


@pytest.fixture
async def jobs(database: AsyncIOMotorDatabase) -> ExportJobs:
    repository = ExportJobs(database)
    await repository.create_indexes()
    return repository


def worker_for(
    jobs: ExportJobs, database: AsyncIOMotorDatabase, blobs: BlobStore, **overrides: int
) -> tuple[ExportWorker, ExportSettings]:
    settings = ExportSettings(**{"part_size": 5 * 1024 * 1024, "lease_ms": 30_000, "page_size": 4, **overrides})
    exporter = Exporter(jobs, ExportSource(database), blobs, settings)
    return ExportWorker(jobs, exporter, settings, concurrency=1, poll_seconds=0.1), settings


async def add_images(
    project: HistoryProjector, events: SimpleNamespace, blobs: BlobStore, user_id: str, count: int, size: int = 2000
) -> dict[str, dict[str, bytes]]:
    """`count` images of the user, every other one restored; returns each one's stored files."""
    files: dict[str, dict[str, bytes]] = {}
    for index in range(count):
        image_id = f"{user_id}-{index:03d}"
        upload = events.uploaded(
            image_id, user_id, created_at_ms=BASE_MS + index * 1000, tags=("family", f"n{index}"), note=f"note {index}"
        )
        await project(upload)
        stored = {"original": os.urandom(size)}
        await blobs.put(upload.image_uploaded.original_key, stored["original"], "image/jpeg")
        if index % 2 == 0:
            result = events.restored(image_id, user_id)
            await project(result)
            stored["restored"] = os.urandom(size // 2)
            await blobs.put(result.image_restored.restored_key, stored["restored"], "image/png")
        files[image_id] = stored
    return files


async def archive_of(blobs: BlobStore, export_id: str) -> zipfile.ZipFile:
    return zipfile.ZipFile(io.BytesIO(await blobs.get(archive_key(export_id))))


async def test_an_export_holds_every_file_byte_for_byte_and_metadata_naming_every_item(
    project: HistoryProjector,
    events: SimpleNamespace,
    blobs: BlobStore,
    jobs: ExportJobs,
    database: AsyncIOMotorDatabase,
) -> None:
    files = await add_images(project, events, blobs, ALICE, 9)
    await add_images(project, events, blobs, BOB, 2)
    await database["items"].update_one(
        {"_id": f"{ALICE}-002"}, {"$set": {"feedback": {"rating": 4, "comment": "=fine", "given_at_ms": BASE_MS}}}
    )
    worker, _ = worker_for(jobs, database, blobs)
    export = await jobs.create(ALICE)

    assert await worker.run_once()

    done = await jobs.get(export.id)
    assert done is not None and done.status == "done"
    assert done.items_done == done.items_total == 9
    archive = await archive_of(blobs, export.id)
    assert archive.testzip() is None
    assert done.size_bytes == (await blobs.size(archive_key(export.id)))
    for image_id, stored in files.items():
        original = next(name for name in archive.namelist() if name.startswith(f"originals/{image_id}."))
        assert archive.read(original) == stored["original"]
        if "restored" in stored:
            assert archive.read(f"restored/{image_id}.png") == stored["restored"]
    assert not any(BOB in name for name in archive.namelist())
    metadata = json.loads(archive.read("metadata.json"))
    assert metadata["count"] == 9
    assert [item["id"] for item in metadata["items"]] == sorted(files)
    rated = next(item for item in metadata["items"] if item["id"] == f"{ALICE}-002")
    assert rated["feedback"]["rating"] == 4 and rated["tags"] == ["family", "n2"] and rated["note"] == "note 2"
    assert rated["quality"]["backend"] == "classical" and rated["files"]["restored"] == f"restored/{ALICE}-002.png"
    rows = list(csv.DictReader(io.StringIO(archive.read("metadata.csv").decode("utf-8-sig"))))
    assert [row["id"] for row in rows] == sorted(files)
    # A cell that a spreadsheet would run as a formula is defused.
    assert next(row for row in rows if row["id"] == f"{ALICE}-002")["feedback_comment"] == "'=fine"


async def test_an_archive_larger_than_a_part_is_stored_as_a_multipart_upload_and_is_intact(
    project: HistoryProjector,
    events: SimpleNamespace,
    blobs: BlobStore,
    jobs: ExportJobs,
    database: AsyncIOMotorDatabase,
) -> None:
    # Random bytes do not compress: about 9 MiB of files in 5 MiB parts.
    files = await add_images(project, events, blobs, ALICE, 4, size=1536 * 1024)
    worker, _ = worker_for(jobs, database, blobs)
    export = await jobs.create(ALICE)

    assert await worker.run_once()

    done = await jobs.get(export.id)
    assert done is not None and done.status == "done" and done.size_bytes > 5 * 1024 * 1024
    archive = await archive_of(blobs, export.id)
    assert archive.testzip() is None
    assert archive.read(f"originals/{ALICE}-003.jpg") == files[f"{ALICE}-003"]["original"]


async def test_a_job_whose_worker_died_is_taken_over_once_its_lease_runs_out(
    project: HistoryProjector,
    events: SimpleNamespace,
    blobs: BlobStore,
    jobs: ExportJobs,
    database: AsyncIOMotorDatabase,
) -> None:
    await add_images(project, events, blobs, ALICE, 3)
    export = await jobs.create(ALICE)
    # A worker claimed it and died: its lease is not renewed.
    assert (await jobs.claim("dead-worker", lease_ms=200))["_id"] == export.id  # type: ignore[index]
    worker, _ = worker_for(jobs, database, blobs)
    assert not await worker.run_once()

    await asyncio.sleep(0.3)
    assert await worker.run_once()

    done = await database["exports"].find_one({"_id": export.id})
    assert done["status"] == "done" and done["attempts"] == 2 and done["items_done"] == 3
    # The dead worker, back, can no longer report on a job that is not its own.
    assert not await jobs.progress(export.id, "dead-worker", 1, 3, 1000)


async def test_a_job_claimed_too_often_fails_instead_of_running_again(
    blobs: BlobStore, jobs: ExportJobs, database: AsyncIOMotorDatabase
) -> None:
    export = await jobs.create(ALICE)
    await database["exports"].update_one({"_id": export.id}, {"$set": {"attempts": 3}})
    worker, _ = worker_for(jobs, database, blobs, max_attempts=3)

    assert await worker.run_once()

    failed = await jobs.get(export.id)
    assert failed is not None and failed.status == "failed" and failed.error == "attempts_exhausted"
    assert not await blobs.exists(archive_key(export.id))


async def test_a_download_link_streams_the_archive_until_it_expires_and_the_archive_is_deleted_after_retention(
    project: HistoryProjector,
    events: SimpleNamespace,
    blobs: BlobStore,
    jobs: ExportJobs,
    database: AsyncIOMotorDatabase,
) -> None:
    await add_images(project, events, blobs, ALICE, 2)
    worker, _ = worker_for(jobs, database, blobs)
    links = ExportLinks(LINK_SECRET, ttl_seconds=600)
    exports = Exports(jobs, blobs, links)
    export = await exports.create(ALICE)
    await worker.run_once()
    done = await exports.get_own(ALICE, export.id)

    token, expires_at_ms = links.issue(done)
    opened, chunks = await exports.open_download(token)
    streamed = b"".join([chunk async for chunk in chunks])

    assert streamed == await blobs.get(archive_key(export.id))
    assert opened.size_bytes == len(streamed)
    assert opened.filename.startswith("facerestore-export-") and opened.filename.endswith(".zip")
    assert now_ms() < expires_at_ms <= now_ms() + 600_000
    with pytest.raises(NotFound):
        await exports.get_own(BOB, export.id)
    expired_token = jwt.encode(
        {"exp_id": export.id, "aud": "facerestore-export", "exp": int(time.time()) - 5}, LINK_SECRET, "HS256"
    )
    for bad in (
        expired_token,
        token[:-3] + "abc",
        ExportLinks("another-secret-0123456789abcdef0123", 60).issue(done)[0],
    ):
        with pytest.raises(NotFound):
            await exports.open_download(bad)

    # Retention over: the archive goes, the export says so, and its link stops working.
    await database["exports"].update_one({"_id": export.id}, {"$set": {"expires_at_ms": now_ms() - 1}})
    assert await exports.expire() == 1
    assert not await blobs.exists(archive_key(export.id))
    assert (await exports.get_own(ALICE, export.id)).status == "expired"
    with pytest.raises(NotFound):
        await exports.open_download(token)


def test_an_item_whose_original_vanished_during_the_export_is_left_out_entirely() -> None:
    entries = [
        ExportEntry(f"img-{index}", BASE_MS, "done", [], "", "", 1, {}, {}, f"o/{index}.jpg", f"r/{index}.jpg")
        for index in range(3)
    ]
    stored = {key: key.encode() for index in (0, 2) for key in (f"o/{index}.jpg", f"r/{index}.jpg")}
    writer = ArchiveWriter("exp", BASE_MS, [entries], stored.get)

    archive = zipfile.ZipFile(io.BytesIO(b"".join(writer.chunks())))

    assert sorted(name for name in archive.namelist() if "/" in name) == [
        "originals/img-0.jpg",
        "originals/img-2.jpg",
        "restored/img-0.jpg",
        "restored/img-2.jpg",
    ]
    assert [item["id"] for item in json.loads(archive.read("metadata.json"))["items"]] == ["img-0", "img-2"]
    assert writer.stats.skipped == 1
