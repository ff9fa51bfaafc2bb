"""Limits on sign-in attempts, counted in Redis (so they survive restarts and are shared
by every replica) with the `limits` library's moving windows."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import NoReturn

from limits import RateLimitItem, parse
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string
from redis.exceptions import RedisError

from facerestore_common.errors import TooManyRequests, Unavailable


@dataclass(frozen=True)
class Limit:
    """A named limit: `item` per `scope` value (a phone, an address, an IP)."""

    name: str
    item: RateLimitItem
    detail: str


class SignInThrottle:
    def __init__(
        self,
        redis_url: str,
        prefix: str,
        requests_per_identity: str,
        requests_per_ip: str,
        verifications_per_identity: str,
        resend_cooldown_seconds: int,
    ) -> None:
        # `limits` speaks to Redis through redis-py here ("redispy"), the client the services use.
        storage = storage_from_string(f"async+{redis_url}", implementation="redispy", key_prefix=f"{prefix}-limits")
        self._limiter = MovingWindowRateLimiter(storage)  # type: ignore[arg-type]
        self.per_identity = Limit("code-requests", parse(requests_per_identity), "too many codes requested")
        self.per_ip = Limit("code-requests-per-ip", parse(requests_per_ip), "too many codes requested from here")
        self.verifications = Limit("code-verifications", parse(verifications_per_identity), "too many sign-in attempts")
        self.cooldown = (
            Limit("resend-cooldown", parse(f"1 per {resend_cooldown_seconds} seconds"), "a code was just sent")
            if resend_cooldown_seconds > 0
            else None
        )

    async def _retry_after(self, limit: Limit, key: str) -> int:
        stats = await self._limiter.get_window_stats(limit.item, limit.name, key)
        return max(1, math.ceil(stats.reset_time - time.time()))

    async def _refuse(self, limit: Limit, key: str) -> NoReturn:
        retry_after = await self._retry_after(limit, key)
        raise TooManyRequests(
            f"{limit.detail}; try again in {retry_after} seconds",
            reason="rate-limited",
            retry_after=retry_after,
            limit=limit.name,
            limit_policy=f"{limit.item.amount};w={limit.item.get_expiry()}",
        )

    async def _acquire(self, checks: list[tuple[Limit, str]]) -> None:
        """Count one attempt against every limit, or refuse (counting nothing) when one is spent.

        An attempt that loses a race for the last slot of a limit is refused too; limits it was
        already counted against keep that count (erring towards refusing)."""
        try:
            for limit, key in checks:
                if not await self._limiter.test(limit.item, limit.name, key):
                    await self._refuse(limit, key)
            for limit, key in checks:
                # Concurrent attempts can all pass the tests above; the hit is atomic, so the
                # ones that lose the race for the last slot are refused here.
                if not await self._limiter.hit(limit.item, limit.name, key):
                    await self._refuse(limit, key)
        except RedisError as error:
            # Fails closed: without counters, codes could be requested or guessed without bound.
            raise Unavailable(
                "sign-in is unavailable right now; try again shortly", reason="limits-unavailable"
            ) from error

    async def code_request(self, identity: str, client_ip: str) -> None:
        checks = [(self.per_identity, identity)]
        if self.cooldown is not None:
            checks.insert(0, (self.cooldown, identity))
        if client_ip:
            checks.append((self.per_ip, client_ip))
        await self._acquire(checks)

    async def verification(self, identity: str) -> None:
        await self._acquire([(self.verifications, identity)])
