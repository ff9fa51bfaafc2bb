"""Probes: /healthz says the process is up; /readyz says whether this gateway can serve.

Ready depends only on the gateway's own dependency (Redis: tokens' revocations, rate limits).
The backend services' health is reported in the body but never fails it: one backend down
must not take every gateway pod out of the Service, when the other routes still work."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, Request
from fastapi.responses import JSONResponse
from redis.asyncio import Redis

from gateway_service.clients import ServiceClients
from gateway_service.openapi_document import api_router

router = api_router("health")


class Readiness:
    """The last report, reused for `cache_seconds` so that many probes cost one round of checks."""

    def __init__(
        self, redis: Redis, clients: ServiceClients, cache_seconds: float = 2.0, timeout_seconds: float = 1.0
    ) -> None:
        self.redis = redis
        self.clients = clients
        self.cache_seconds = cache_seconds
        self.timeout_seconds = timeout_seconds
        self._report: tuple[bool, dict[str, object]] | None = None
        self._at = 0.0
        self._lock = asyncio.Lock()

    async def _redis_answers(self) -> bool:
        try:
            return bool(await asyncio.wait_for(self.redis.ping(), self.timeout_seconds))
        except Exception:
            return False

    async def report(self) -> tuple[bool, dict[str, object]]:
        async with self._lock:
            if self._report is None or time.monotonic() - self._at >= self.cache_seconds:
                redis_ok, backends = await asyncio.gather(
                    self._redis_answers(), self.clients.health(self.timeout_seconds)
                )
                ready = redis_ok
                body: dict[str, object] = {
                    "status": "ready" if ready else "not-ready",
                    "checks": {"redis": redis_ok},
                    "backends": backends,
                    # When these checks ran: answers within READYZ_CACHE_SECONDS repeat them.
                    "checked_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
                }
                self._report, self._at = (ready, body), time.monotonic()
            return self._report


async def get_readiness(request: Request) -> Readiness:
    readiness: Readiness = request.app.state.readiness
    return readiness


@router.get("/healthz", summary="The process is up")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Redis answers; the backend services' health is reported, not required")
async def readyz(readiness: Annotated[Readiness, Depends(get_readiness)]) -> JSONResponse:
    ready, body = await readiness.report()
    return JSONResponse(body, status_code=200 if ready else 503)
