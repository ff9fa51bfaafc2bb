"""The outbox relay: publishes `image.uploaded` for every accepted job whose event the
broker has not confirmed yet (it was down, or the process died right after accepting)."""

from __future__ import annotations

import asyncio

from facerestore_common.logging import get_logger
from upload_service.jobs import JobRepository
from upload_service.uploads import Uploads

log = get_logger(__name__)


class OutboxRelay:
    def __init__(
        self, jobs: JobRepository, uploads: Uploads, interval_seconds: float, retry_delay_ms: int, batch: int = 100
    ) -> None:
        self._jobs = jobs
        self._uploads = uploads
        self._interval = interval_seconds
        self._retry_delay_ms = retry_delay_ms
        self._batch = batch

    async def run_once(self) -> int:
        """Publish what is due; returns how many events the broker confirmed."""
        published = 0
        for job in await self._jobs.due_for_publishing(self._batch):
            if await self._uploads.publish(job):
                published += 1
                log.info("outbox_published", image_id=job.image_id, attempts=job.publish_attempts + 1)
            else:
                await self._jobs.postpone(job.image_id, self._retry_delay_ms)
                break  # the broker is not taking events; try the rest next round
        return published

    async def run_forever(self) -> None:
        while True:
            try:
                await self.run_once()
            except Exception:
                log.error("outbox_relay_failed", exc_info=True)
            await asyncio.sleep(self._interval)
