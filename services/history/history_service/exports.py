"""Exports of a user's whole history as a ZIP in the bucket, made in the background.

Where it runs and why: in history, which owns the items and knows every file's key, as a
MongoDB-backed job queue rather than an `export.requested` event. The job document is at once
the queue entry and the status the API reports, written by one insert, so there is no second
write (an event) that could be lost between the two and no outbox to relay it. A worker claims
a job with one atomic update that takes a lease (`lease_until_ms`) and renews it with every
progress report; a worker that dies stops renewing, the lease runs out, and any worker (the
restarted process, or another replica) claims the job again and makes the archive anew (a ZIP
stream cannot be resumed half-way; the interrupted multipart upload is aborted or, after a
crash, left to the bucket's lifecycle rule). After `max_attempts` claims the job fails. Each
replica runs `EXPORT_WORKERS` jobs at a time, so exports never starve event consumption.

An archive lives `EXPORT_RETENTION_SECONDS`; then the maintenance loop deletes it and the job
says `expired`. Download links are signed tokens valid `EXPORT_LINK_TTL_SECONDS` (never past
the archive's deletion), served in chunks through the gateway."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import jwt
from motor.motor_asyncio import AsyncIOMotorDatabase
from pymongo import ReturnDocument

from facerestore_common.errors import NotFound
from facerestore_common.logging import get_logger
from facerestore_common.storage import BlobNotFound, BlobStore
from facerestore_common.timeutil import now_ms
from history_service.export_archive import ArchiveWriter, ExportEntry

log = get_logger(__name__)

T = TypeVar("T")
_AUDIENCE = "facerestore-export"
# How often a running export reports progress (and so renews its lease), at most.
PROGRESS_INTERVAL_SECONDS = 1.0


def archive_key(export_id: str) -> str:
    return f"exports/{export_id}.zip"


@dataclass(frozen=True)
class Export:
    id: str
    user_id: str
    status: str
    created_at_ms: int
    updated_at_ms: int
    items_done: int = 0
    items_total: int = 0
    size_bytes: int = 0
    expires_at_ms: int = 0
    error: str = ""

    @classmethod
    def from_document(cls, doc: dict[str, Any]) -> Export:
        return cls(
            id=doc["_id"],
            user_id=doc["user_id"],
            status=doc.get("status", "queued"),
            created_at_ms=int(doc.get("created_at_ms", 0)),
            updated_at_ms=int(doc.get("updated_at_ms", 0)),
            items_done=int(doc.get("items_done", 0)),
            items_total=int(doc.get("items_total", 0)),
            size_bytes=int(doc.get("size_bytes", 0)),
            expires_at_ms=int(doc.get("expires_at_ms", 0)),
            error=str(doc.get("error", "")),
        )

    @property
    def filename(self) -> str:
        day = datetime.fromtimestamp(self.created_at_ms / 1000, UTC).strftime("%Y%m%d")
        return f"facerestore-export-{day}-{self.id[:8]}.zip"


class ExportLost(Exception):
    """The job is no longer this worker's: its lease was taken over, or the user was erased."""


class ExportJobs:
    """The `exports` collection: job queue and status in one document per export."""

    def __init__(self, database: AsyncIOMotorDatabase) -> None:
        self._jobs = database["exports"]

    async def create_indexes(self) -> None:
        await self._jobs.create_index([("user_id", 1), ("created_at_ms", -1)])
        await self._jobs.create_index([("status", 1), ("created_at_ms", 1)])
        await self._jobs.create_index([("status", 1), ("expires_at_ms", 1)])

    async def create(self, user_id: str) -> Export:
        now = now_ms()
        doc = {
            "_id": uuid.uuid4().hex,
            "user_id": user_id,
            "status": "queued",
            "created_at_ms": now,
            "updated_at_ms": now,
            "items_done": 0,
            "items_total": 0,
            "attempts": 0,
            "lease_owner": "",
            "lease_until_ms": 0,
        }
        await self._jobs.insert_one(doc)
        return Export.from_document(doc)

    async def get(self, export_id: str) -> Export | None:
        doc = await self._jobs.find_one({"_id": export_id})
        return Export.from_document(doc) if doc else None

    async def of_user(self, user_id: str, limit: int = 20) -> list[Export]:
        docs = await self._jobs.find({"user_id": user_id}).sort("created_at_ms", -1).limit(limit).to_list(None)
        return [Export.from_document(doc) for doc in docs]

    async def claim(self, owner: str, lease_ms: int) -> dict[str, Any] | None:
        """Take the oldest queued job, or a running one whose worker stopped renewing its lease."""
        now = now_ms()
        return await self._jobs.find_one_and_update(
            {"$or": [{"status": "queued"}, {"status": "running", "lease_until_ms": {"$lt": now}}]},
            {
                "$set": {
                    "status": "running",
                    "lease_owner": owner,
                    "lease_until_ms": now + lease_ms,
                    "updated_at_ms": now,
                },
                "$inc": {"attempts": 1},
            },
            sort=[("created_at_ms", 1)],
            return_document=ReturnDocument.AFTER,
        )

    async def _update_own(self, export_id: str, owner: str, fields: dict[str, Any]) -> bool:
        result = await self._jobs.update_one(
            {"_id": export_id, "lease_owner": owner, "status": "running"},
            {"$set": {**fields, "updated_at_ms": now_ms()}},
        )
        return result.matched_count == 1

    async def progress(self, export_id: str, owner: str, items_done: int, items_total: int, lease_ms: int) -> bool:
        return await self._update_own(
            export_id,
            owner,
            {"items_done": items_done, "items_total": items_total, "lease_until_ms": now_ms() + lease_ms},
        )

    async def finish(self, export_id: str, owner: str, items: int, size_bytes: int, retention_ms: int) -> bool:
        now = now_ms()
        return await self._update_own(
            export_id,
            owner,
            {
                "status": "done",
                "items_done": items,
                "items_total": items,
                "size_bytes": size_bytes,
                "completed_at_ms": now,
                "expires_at_ms": now + retention_ms,
                "lease_owner": "",
                "error": "",
            },
        )

    async def give_back(self, export_id: str, owner: str, error: str, failed: bool) -> bool:
        """After an error: queue the job again for another attempt, or fail it for good."""
        fields: dict[str, Any] = {"error": error, "lease_owner": "", "lease_until_ms": 0}
        fields["status"] = "failed" if failed else "queued"
        return await self._update_own(export_id, owner, fields)

    async def fail_exhausted(self, export_id: str, owner: str) -> bool:
        return await self.give_back(export_id, owner, "attempts_exhausted", failed=True)

    async def due_for_expiry(self, limit: int = 100) -> list[Export]:
        docs = await self._jobs.find({"status": "done", "expires_at_ms": {"$lt": now_ms()}}).limit(limit).to_list(None)
        return [Export.from_document(doc) for doc in docs]

    async def mark_expired(self, export_id: str) -> None:
        await self._jobs.update_one(
            {"_id": export_id, "status": "done"}, {"$set": {"status": "expired", "updated_at_ms": now_ms()}}
        )

    async def delete_user(self, user_id: str) -> list[str]:
        """Remove every export of the user; returns their ids (whose archives must go too)."""
        ids = [doc["_id"] for doc in await self._jobs.find({"user_id": user_id}, {"_id": 1}).to_list(None)]
        if ids:
            await self._jobs.delete_many({"_id": {"$in": ids}})
        return ids


class ExportLinks:
    """Signed, expiring download links: the capability the download URL carries."""

    def __init__(self, secret: str, ttl_seconds: int) -> None:
        self._secret = secret
        self._ttl = ttl_seconds

    def issue(self, export: Export) -> tuple[str, int]:
        """A token and when it expires (epoch ms): in the link's lifetime, never past the archive's."""
        now = int(time.time())
        expires = min(now + self._ttl, export.expires_at_ms // 1000) if export.expires_at_ms else now + self._ttl
        token = jwt.encode({"exp_id": export.id, "aud": _AUDIENCE, "iat": now, "exp": expires}, self._secret, "HS256")
        return token, expires * 1000

    def read(self, token: str) -> str:
        try:
            claims = jwt.decode(token, self._secret, algorithms=["HS256"], audience=_AUDIENCE)
        except jwt.InvalidTokenError:
            raise NotFound("this link has expired or does not exist", reason="not-found") from None
        export_id = claims.get("exp_id")
        if not isinstance(export_id, str):
            raise NotFound("this link has expired or does not exist", reason="not-found")
        return export_id


@dataclass(frozen=True)
class ExportSettings:
    part_size: int = 8 * 1024 * 1024
    lease_ms: int = 60_000
    max_attempts: int = 3
    retention_ms: int = 7 * 24 * 3600 * 1000
    page_size: int = 100


class ExportSource:
    """The items an export holds: the user's visible items created up to the request, oldest first."""

    def __init__(self, database: AsyncIOMotorDatabase) -> None:
        self._items = database["items"]

    @staticmethod
    def _query(user_id: str, created_up_to_ms: int) -> dict[str, Any]:
        # sort_key is "<13-digit ms>-<id>"; "~" sorts after every id character.
        return {"user_id": user_id, "deleted": False, "sort_key": {"$gt": "", "$lte": f"{created_up_to_ms:013d}-~"}}

    async def count(self, user_id: str, created_up_to_ms: int) -> int:
        return await self._items.count_documents(self._query(user_id, created_up_to_ms))

    async def page(self, user_id: str, created_up_to_ms: int, after: str, size: int) -> list[dict[str, Any]]:
        query = self._query(user_id, created_up_to_ms)
        if after:
            query["sort_key"]["$gt"] = after
        return await self._items.find(query).sort("sort_key", 1).limit(size).to_list(None)


def _entry(doc: dict[str, Any]) -> ExportEntry:
    return ExportEntry(
        id=doc["_id"],
        created_at_ms=int(doc.get("created_at_ms", 0)),
        status=doc.get("status", "queued"),
        tags=list(doc.get("tags", [])),
        note=doc.get("note", ""),
        location=doc.get("location", ""),
        faces=int(doc.get("faces", 0)),
        quality=dict(doc.get("quality") or {}),
        feedback=dict(doc.get("feedback") or {}),
        original_key=doc.get("original_key", ""),
        restored_key=doc.get("restored_key", ""),
        under_review=bool(doc.get("under_review", False)),
        error=doc.get("error", ""),
    )


class Exporter:
    """Builds one export's archive and stores it, streaming from the bucket to the bucket."""

    def __init__(self, jobs: ExportJobs, source: ExportSource, blobs: BlobStore, settings: ExportSettings) -> None:
        self._jobs = jobs
        self._source = source
        self._blobs = blobs
        self._settings = settings

    async def run(self, job: dict[str, Any], owner: str) -> None:
        export = Export.from_document(job)
        loop = asyncio.get_running_loop()
        total = await self._source.count(export.user_id, export.created_at_ms)
        if not await self._jobs.progress(export.id, owner, 0, total, self._settings.lease_ms):
            raise ExportLost(export.id)

        def call(coroutine: Awaitable[T]) -> T:
            # From the writer's thread: run on the service's event loop and wait for the answer.
            return asyncio.run_coroutine_threadsafe(coroutine, loop).result()  # type: ignore[arg-type]

        def pages() -> Iterator[list[ExportEntry]]:
            after = ""
            while docs := call(
                self._source.page(export.user_id, export.created_at_ms, after, self._settings.page_size)
            ):
                after = docs[-1]["sort_key"]
                yield [_entry(doc) for doc in docs]

        def fetch(key: str) -> bytes | None:
            try:
                return call(self._blobs.get(key))
            except BlobNotFound:
                return None

        last_report = [time.monotonic()]

        def progress(items_done: int) -> None:
            if time.monotonic() - last_report[0] < PROGRESS_INTERVAL_SECONDS:
                return
            last_report[0] = time.monotonic()
            if not call(
                self._jobs.progress(export.id, owner, items_done, max(total, items_done), self._settings.lease_ms)
            ):
                raise ExportLost(export.id)

        writer = ArchiveWriter(export.id, export.created_at_ms, pages(), fetch, progress)
        key = archive_key(export.id)
        started = time.perf_counter()
        size = await self._blobs.put_stream(key, writer.chunks(), "application/zip", self._settings.part_size)
        if not await self._jobs.finish(export.id, owner, writer.stats.items, size, self._settings.retention_ms):
            # Erased (or taken over) while the last part was stored: this archive is nobody's.
            await self._blobs.delete(key)
            raise ExportLost(export.id)
        log.info(
            "export_done",
            export_id=export.id,
            items=writer.stats.items,
            files=writer.stats.files,
            skipped=writer.stats.skipped,
            bytes=size,
            seconds=round(time.perf_counter() - started, 2),
        )


class ExportWorker:
    """Claims jobs and runs them, `concurrency` at a time, until stopped."""

    def __init__(
        self, jobs: ExportJobs, exporter: Exporter, settings: ExportSettings, concurrency: int, poll_seconds: float
    ) -> None:
        self._jobs = jobs
        self._exporter = exporter
        self._settings = settings
        self._concurrency = concurrency
        self._poll = poll_seconds
        self._owner = f"history-{uuid.uuid4().hex[:12]}"
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def wake(self) -> None:
        """A job was just queued by this process: do not wait for the next poll."""
        self._wake.set()

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._loop()) for _ in range(self._concurrency)]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def _loop(self) -> None:
        while True:
            try:
                ran = await self.run_once()
            except Exception:
                log.error("export_worker_failed", exc_info=True)
                ran = False
            if not ran:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), self._poll)
                except TimeoutError:
                    pass

    async def run_once(self) -> bool:
        """Claim and run one job; False when there was none."""
        job = await self._jobs.claim(self._owner, self._settings.lease_ms)
        if job is None:
            return False
        export_id = job["_id"]
        attempts = int(job.get("attempts", 1))
        if attempts > self._settings.max_attempts:
            await self._jobs.fail_exhausted(export_id, self._owner)
            log.error("export_failed", export_id=export_id, reason="attempts_exhausted", attempts=attempts - 1)
            return True
        log.info("export_started", export_id=export_id, attempt=attempts)
        try:
            await self._exporter.run(job, self._owner)
        except ExportLost:
            log.warning("export_lost", export_id=export_id)
        except Exception as error:
            failed = attempts >= self._settings.max_attempts
            await self._jobs.give_back(export_id, self._owner, f"{type(error).__name__}", failed=failed)
            log.error("export_attempt_failed", export_id=export_id, attempt=attempts, final=failed, exc_info=True)
        return True


class Exports:
    """What the API does with exports."""

    def __init__(
        self, jobs: ExportJobs, blobs: BlobStore, links: ExportLinks, on_created: Callable[[], None] = lambda: None
    ) -> None:
        self.jobs = jobs
        self._blobs = blobs
        self.links = links
        self._on_created = on_created

    async def create(self, user_id: str) -> Export:
        export = await self.jobs.create(user_id)
        log.info("export_requested", export_id=export.id, user_id=user_id)
        self._on_created()
        return export

    async def get_own(self, user_id: str, export_id: str) -> Export:
        export = await self.jobs.get(export_id)
        if export is None or export.user_id != user_id:
            raise NotFound("no such export", reason="not-found")
        return export

    async def open_download(self, token: str) -> tuple[Export, AsyncIterator[bytes]]:
        export = await self.jobs.get(self.links.read(token))
        if export is None or export.status != "done":
            raise NotFound("this link has expired or does not exist", reason="not-found")
        try:
            size = await self._blobs.size(archive_key(export.id))
        except BlobNotFound:
            raise NotFound("this link has expired or does not exist", reason="not-found") from None
        return Export(**{**export.__dict__, "size_bytes": size}), self._blobs.stream(archive_key(export.id))

    async def expire(self) -> int:
        """Delete the archives whose retention ran out."""
        expired = await self.jobs.due_for_expiry()
        for export in expired:
            await self._blobs.delete(archive_key(export.id))
            await self.jobs.mark_expired(export.id)
            log.info("export_expired", export_id=export.id)
        return len(expired)

    async def erase_user(self, user_id: str) -> int:
        """Every export of the user and its archive (user.deleted)."""
        ids = await self.jobs.delete_user(user_id)
        for export_id in ids:
            await self._blobs.delete(archive_key(export_id))
        return len(ids)
