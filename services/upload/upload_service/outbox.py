"""The outbox relay: publishes `image.uploaded` for every accepted job, and
`restoration.requested` for every recorded reprocess, whose event the broker has not confirmed
yet (it was down, or the process died right after accepting)."""

from __future__ import annotations

import asyncio

from facerestore_common.logging import get_logger
from facerestore_common.outbox import OUTBOX_BACKLOG, OUTBOX_OLDEST_AGE
from facerestore_common.timeutil import now_ms
from upload_service.jobs import JobRepository
from upload_service.restorations import Restorations
from upload_service.uploads import Uploads

log = get_logger(__name__)


class OutboxRelay:
    def __init__(
        self,
        jobs: JobRepository,
        uploads: Uploads,
        interval_seconds: float,
        retry_delay_ms: int,
        batch: int = 100,
        restorations: Restorations | None = None,
    ) -> None:
        self._jobs = jobs
        self._uploads = uploads
        self._restorations = restorations
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
        if self._restorations is not None:
            published += await self._relay_restorations(self._restorations)
        return published

    async def _relay_restorations(self, restorations: Restorations) -> int:
        published = 0
        for request in await restorations.requests.due_for_publishing(self._batch):
            if await restorations.publish(request):
                published += 1
                log.info("outbox_published", image_id=request.image_id, restoration_id=request.restoration_id)
            else:
                await restorations.requests.postpone(request, self._retry_delay_ms)
                break
        return published

    async def measure(self) -> None:
        """The backlog gauges: uploads accepted whose image.uploaded the broker has not confirmed."""
        waiting, oldest_ms = await self._jobs.backlog()
        OUTBOX_BACKLOG.labels("image.uploaded").set(waiting)
        OUTBOX_OLDEST_AGE.labels("image.uploaded").set(max(0.0, (now_ms() - oldest_ms) / 1000) if oldest_ms else 0.0)
        if self._restorations is not None:
            waiting, oldest_ms = await self._restorations.requests.backlog()
            OUTBOX_BACKLOG.labels("restoration.requested").set(waiting)
            OUTBOX_OLDEST_AGE.labels("restoration.requested").set(
                max(0.0, (now_ms() - oldest_ms) / 1000) if oldest_ms else 0.0
            )

    async def run_forever(self, measure_every_seconds: float = 15.0) -> None:
        """Relay every interval; bring the backlog gauges up to date at most every
        `measure_every_seconds` (two more queries: the database is shared, idle rounds stay cheap)."""
        loop = asyncio.get_running_loop()
        measured_at = 0.0
        while True:
            try:
                await self.run_once()
                if loop.time() - measured_at >= measure_every_seconds:
                    await self.measure()
                    measured_at = loop.time()
            except Exception:
                log.error("outbox_relay_failed", exc_info=True)
            await asyncio.sleep(self._interval)
