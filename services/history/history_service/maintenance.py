"""Finishes work that a crash (or a busy moment) left undone, every few seconds: files of images
deleted with "delete all", face index payloads after edits, `q` words and listed faces of items
projected before they existed, and archives past their retention. Every step is idempotent, so any number of
replicas may run it."""

from __future__ import annotations

import asyncio

from facerestore_common.logging import get_logger
from history_service.exports import Exports
from history_service.library import Library

log = get_logger(__name__)


class Maintenance:
    def __init__(self, library: Library, exports: Exports | None, interval_seconds: float) -> None:
        self._library = library
        self._exports = exports
        self._interval = interval_seconds

    async def run_once(self) -> dict[str, int]:
        done = {
            "purged": await self._library.purge_pending(),
            "reindexed": await self._library.sync_stale_index(),
            "words_added": await self._library.backfill_search_words(),
            "faces_listed": await self._library.backfill_detected_faces(),
            "exports_expired": await self._exports.expire() if self._exports is not None else 0,
        }
        if any(done.values()):
            log.info("maintenance_done", **done)
        return done

    async def run_forever(self) -> None:
        while True:
            try:
                await self.run_once()
            except Exception:
                log.error("maintenance_failed", exc_info=True)
            await asyncio.sleep(self._interval)
