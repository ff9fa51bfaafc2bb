"""Keeps this worker's offers alive in the model registry while it consumes, and withdraws
them when it stops. Redis being away does not stop the worker: its queues keep it busy;
only the gateway's view of what can run goes stale (and expires) until Redis is back.

A worker of a group that scales to zero (KEDA starts one when a message waits in its queues)
also keeps a standby entry for its group, "group:<name>", with a long time to live that a stop
does not withdraw: with no worker up, its models can still run here, so the gateway accepts
requests for them and the queue depth that wakes the group up can build."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Sequence

from redis.exceptions import RedisError

from facerestore_common.logging import get_logger
from facerestore_common.model_registry import ModelOffer, ModelRegistry

log = get_logger(__name__)


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


RETRY_AFTER_FAILURE_SECONDS = 1.0


def standby_id(group: str) -> str:
    return f"group:{group}"


class OfferAnnouncer:
    def __init__(
        self,
        registry: ModelRegistry,
        worker_id: str,
        offers: Sequence[ModelOffer],
        *,
        group: str = "",
        standby_seconds: float = 0.0,
    ) -> None:
        """standby_seconds > 0 (with a group): keep the group's standby entry for that long."""
        self._registry = registry
        self.worker_id = worker_id
        self._offers = list(offers)
        self._standby = (standby_id(group), standby_seconds) if group and standby_seconds > 0 else None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Announce once now (logged, not raised, if Redis is away), then keep announcing."""
        announced = await self._announce()
        self._task = asyncio.create_task(self._keep_announcing(announced))

    async def _announce(self) -> bool:
        try:
            await self._registry.announce(self.worker_id, self._offers)
            if self._standby is not None:
                group_id, seconds = self._standby
                await self._registry.announce(group_id, self._offers, ttl_seconds=seconds)
        except (RedisError, OSError):
            log.warning("models_announce_failed", worker_id=self.worker_id, exc_info=True)
            return False
        return True

    async def _keep_announcing(self, announced: bool) -> None:
        while True:
            # After a failure, again soon: a Redis that restarted empty must learn of us quickly.
            interval = self._registry.announce_interval_seconds
            await asyncio.sleep(interval if announced else min(interval, RETRY_AFTER_FAILURE_SECONDS))
            ok = await self._announce()
            if ok and not announced:
                log.info("models_announced_again", worker_id=self.worker_id)
            announced = ok

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        try:
            await self._registry.withdraw(self.worker_id)
        except (RedisError, OSError):
            log.warning("models_withdraw_failed", worker_id=self.worker_id, exc_info=True)
