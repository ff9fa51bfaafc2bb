"""Rate limits in Redis through the `limits` library (moving windows), with the IETF
RateLimit header fields on every limited response and Retry-After on 429s.

What happens when Redis is unreachable is decided per limit: `fail_open` limits let the
request through (reads should not fail because counting failed), the others refuse it
with 503 (an unlimited upload endpoint is an abuse vector)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from limits import RateLimitItem, parse
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string
from redis.exceptions import RedisError

from facerestore_common.logging import get_logger
from gateway_service.problems import Problem

log = get_logger(__name__)


@dataclass(frozen=True)
class Limit:
    name: str
    item: RateLimitItem
    fail_open: bool

    @classmethod
    def of(cls, name: str, spec: str, fail_open: bool) -> Limit:
        return cls(name, parse(spec), fail_open)


@dataclass(frozen=True)
class Verdict:
    limit: Limit
    remaining: int
    reset_after: int

    def headers(self) -> dict[str, str]:
        return {
            "RateLimit-Limit": str(self.limit.item.amount),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_after),
            "RateLimit-Policy": f"{self.limit.item.amount};w={self.limit.item.get_expiry()}",
        }


class RateLimiter:
    def __init__(self, redis_url: str, key_prefix: str) -> None:
        storage = storage_from_string(f"async+{redis_url}", implementation="redispy", key_prefix=key_prefix)
        self._limiter = MovingWindowRateLimiter(storage)  # type: ignore[arg-type]

    async def hit(self, limit: Limit, key: str) -> Verdict | None:
        """Count one request; raise a 429 Problem when the limit is spent. None: not counted (Redis down, fail-open)."""
        try:
            allowed = await self._limiter.hit(limit.item, limit.name, key)
            stats = await self._limiter.get_window_stats(limit.item, limit.name, key)
        except RedisError as error:
            if limit.fail_open:
                log.warning("rate_limit_unchecked", limit=limit.name, error=repr(error))
                return None
            log.error("rate_limit_unavailable", limit=limit.name, error=repr(error))
            raise Problem(503, "rate-limit-unavailable", "this is unavailable right now; try again shortly") from error
        verdict = Verdict(limit, stats.remaining, max(0, math.ceil(stats.reset_time - time.time())))
        if not allowed:
            retry_after = max(1, verdict.reset_after)
            raise Problem(
                429,
                "rate-limited",
                f"too many requests ({limit.name}); try again in {retry_after} seconds",
                headers={**verdict.headers(), "Retry-After": str(retry_after)},
                limit=limit.name,
                retry_after=retry_after,
            )
        return verdict
