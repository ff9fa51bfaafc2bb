"""The restorer models the gateway answers from: the model registry as the workers announce it,
read at most once per `refresh_seconds` (an upload costs no registry round trip of its own),
with every family seen in the last `grace_seconds` still counted as available. The grace covers
what the registry cannot tell from a withdrawal: a worker that crashed and is restarting, or a
Redis that restarted and lost the announcements until the workers' next round. Uploads accepted
meanwhile wait in their model's durable queue; a family gone for longer is 409 again."""

from __future__ import annotations

import time
from collections.abc import Callable

from redis.exceptions import RedisError

from facerestore_common.model_registry import ModelOffer, ModelRegistry


class ModelCatalog:
    def __init__(
        self,
        registry: ModelRegistry,
        refresh_seconds: float,
        grace_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = registry
        self._refresh_seconds = refresh_seconds
        self._grace_seconds = grace_seconds
        self._clock = clock
        self._read_at: float | None = None
        # family -> (its latest offer, when the registry last listed it)
        self._seen: dict[str, tuple[ModelOffer, float]] = {}

    async def available(self) -> dict[str, ModelOffer]:
        """Family -> offer. Raises RedisError when the registry cannot be read and nothing was
        read from it within the grace period."""
        now = self._clock()
        if self._read_at is None or now - self._read_at >= self._refresh_seconds:
            try:
                live = await self.registry.available()
            except RedisError:
                if self._read_at is None or now - self._read_at > self._grace_seconds:
                    raise
            else:
                self._read_at = now
                for family, offer in live.items():
                    self._seen[family] = (offer, now)
        return {
            family: offer for family, (offer, seen_at) in self._seen.items() if now - seen_at <= self._grace_seconds
        }
