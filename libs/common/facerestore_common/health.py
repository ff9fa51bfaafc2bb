"""What a process knows about its own health: its dependencies, checked on a schedule (gRPC
services report them through the standard health service), and a heartbeat of its event loop
(a liveness probe answered from another thread notices a loop that no longer turns)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping

from redis.asyncio import Redis

from facerestore_common.logging import get_logger

log = get_logger(__name__)

# True when the dependency answers. Raising or taking longer than the watch's timeout counts as False.
DependencyCheck = Callable[[], Awaitable[bool]]
HealthListener = Callable[[bool], Awaitable[None]]


class DependencyWatch:
    """Runs every check, all at once, every `interval_seconds`; tells `on_change` whenever
    "all answer" turns into "one does not" or back, and logs which one it was."""

    def __init__(
        self,
        checks: Mapping[str, DependencyCheck],
        on_change: HealthListener,
        interval_seconds: float = 5.0,
        timeout_seconds: float = 2.0,
    ) -> None:
        self._checks = dict(checks)
        self._on_change = on_change
        self._interval = interval_seconds
        self._timeout = timeout_seconds
        self.results: dict[str, bool] = {}
        self.healthy: bool | None = None

    async def _check(self, name: str, check: DependencyCheck) -> bool:
        try:
            return bool(await asyncio.wait_for(check(), self._timeout))
        except Exception as error:
            log.debug("dependency_check_failed", dependency=name, error=type(error).__name__)
            return False

    async def check_once(self) -> bool:
        names = list(self._checks)
        answers = await asyncio.gather(*(self._check(name, self._checks[name]) for name in names))
        self.results = dict(zip(names, answers, strict=True))
        healthy = all(answers)
        if healthy != self.healthy:
            down = sorted(name for name, ok in self.results.items() if not ok)
            if healthy:
                log.info("dependencies_available", dependencies=names)
            else:
                log.warning("dependencies_unavailable", unavailable=down)
            self.healthy = healthy
            await self._on_change(healthy)
        return healthy

    async def run(self) -> None:
        """Keep checking, every interval, after a first check_once()."""
        while True:
            await asyncio.sleep(self._interval)
            await self.check_once()


class LoopHeartbeat:
    """Beats from inside the event loop; `age_seconds()` is safe to call from any thread and
    grows without bound while something blocks the loop."""

    def __init__(self, interval_seconds: float = 1.0) -> None:
        self._interval = interval_seconds
        self._last = time.monotonic()

    async def run(self) -> None:
        while True:
            self._last = time.monotonic()
            await asyncio.sleep(self._interval)

    def age_seconds(self) -> float:
        return time.monotonic() - self._last


def redis_check(client: Redis) -> DependencyCheck:
    async def check() -> bool:
        return bool(await client.ping())

    return check
