"""The messages a consumer holds (delivered, not yet acked or rejected) and since when:
shutdown waits for them, and a liveness probe sees one that never finishes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from typing import Any


class InFlight:
    def __init__(self) -> None:
        self._since: dict[asyncio.Future[None], float] = {}

    def start(self, handling: Coroutine[Any, Any, None]) -> asyncio.Future[None]:
        task = asyncio.ensure_future(handling)
        self._since[task] = time.monotonic()
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Future[None]) -> None:
        self._since.pop(task, None)

    def __len__(self) -> int:
        return len(self._since)

    def oldest_seconds(self) -> float:
        """How long the oldest message in hand has been held (0 with none); safe from any thread."""
        started = tuple(self._since.values())  # one C-level copy: the loop cannot change it midway
        return time.monotonic() - min(started) if started else 0.0

    async def wait(self, timeout_seconds: float) -> None:
        if self._since:
            await asyncio.wait(set(self._since), timeout=timeout_seconds)
