"""Wiring of the library's parts (edits and filters, exports, erasure, the maintenance loop)
into the history service: built and started by main.py."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

from motor.motor_asyncio import AsyncIOMotorDatabase

from facerestore_common.events import EventBus
from facerestore_common.storage import BlobStore
from history_service.erase import UserEraser
from history_service.exports import (
    Exporter,
    ExportJobs,
    ExportLinks,
    Exports,
    ExportSettings,
    ExportSource,
    ExportWorker,
)
from history_service.history import History
from history_service.indexing import FaceIndexer
from history_service.library import Library
from history_service.maintenance import Maintenance
from history_service.settings import Settings


@dataclass
class LibraryServices:
    library: Library
    exports: Exports
    eraser: UserEraser
    worker: ExportWorker
    maintenance: Maintenance
    export_workers: int
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @classmethod
    async def create(
        cls, settings: Settings, database: AsyncIOMotorDatabase, history: History, blobs: BlobStore, bus: EventBus
    ) -> LibraryServices:
        indexer = (
            FaceIndexer(history.items, history.faces, history.face_index)
            if history.faces is not None and history.face_index is not None
            else None
        )
        library = Library(history, blobs, bus, indexer, inline_max_bytes=settings.inline_max_bytes)
        await library.create_indexes()
        jobs = ExportJobs(database)
        await jobs.create_indexes()
        export_settings = ExportSettings(
            part_size=settings.export_part_size_bytes,
            lease_ms=int(settings.export_lease_seconds * 1000),
            max_attempts=settings.export_max_attempts,
            retention_ms=settings.export_retention_seconds * 1000,
        )
        worker = ExportWorker(
            jobs,
            Exporter(jobs, ExportSource(database), blobs, export_settings),
            export_settings,
            concurrency=settings.export_workers,
            poll_seconds=settings.export_poll_seconds,
        )
        links = ExportLinks(settings.download_token_secret.get_secret_value(), settings.export_link_ttl_seconds)
        exports = Exports(jobs, blobs, links, on_created=worker.wake)
        eraser = UserEraser(
            database, history, settings.pseudonym_secret.get_secret_value(), exports=exports, indexer=indexer
        )
        maintenance = Maintenance(library, exports, settings.maintenance_interval_seconds)
        return cls(library, exports, eraser, worker, maintenance, settings.export_workers)

    def start(self) -> None:
        if self.export_workers:
            self.worker.start()
        self._tasks.append(asyncio.create_task(self.maintenance.run_forever()))

    async def stop(self) -> None:
        await self.worker.stop()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.library.close()
