"""Rate limits in Redis as moving windows, with the IETF RateLimit header fields on every
limited response and Retry-After on 429s.

A window is a sorted set of the hits it holds, scored by their time; one Lua script drops the
hits that left the window, counts and, when there is room, adds the new hit, all in one round
trip. The same round trip can also answer whether a key exists and read another (starting it,
when absent, with a value never used before: the hit's own member): the request
context asks for the per-IP limit, for the session of the request's token and for its user's
library generation (what the page cache checks its copies against) together. A hit has its own member in
the set, so a hit that should not have counted (an upload refused by the upload service, an
Idempotency-Key replay) is taken back.

What happens when Redis is unreachable is decided per limit: `fail_open` limits let the
request through (reads should not fail because counting failed), the others refuse it
with 503 (an unlimited upload endpoint is an abuse vector)."""

from __future__ import annotations

import itertools
import math
import secrets
from dataclasses import dataclass

from limits import RateLimitItem, parse
from redis.asyncio import Redis
from redis.exceptions import RedisError

from facerestore_common.logging import get_logger
from gateway_service.problems import Problem

log = get_logger(__name__)

# KEYS[1]: the window; then, when ARGV[4] is 1, a key whose existence is reported; then, when
# ARGV[5] is 1, a key whose value is read, and set to this hit's member for ARGV[6] seconds when absent.
# ARGV: window length in ms, the limit, this hit's member, the two flags, the TTL of a value set.
# Time is Redis's own, shared by every gateway.
# Returns {allowed (0/1), hits in the window, ms until the oldest hit leaves it, the key exists (0/1),
# the value read (false when not asked)}.
_HIT = """
local now = redis.call('TIME')
now = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local window = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1])
local allowed = 0
if count < limit then
  allowed = 1
  count = count + 1
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], window)
end
local reset = window
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if oldest[2] then reset = tonumber(oldest[2]) + window - now end
local next_key = 2
local exists = 0
if ARGV[4] == '1' then
  exists = redis.call('EXISTS', KEYS[next_key])
  next_key = next_key + 1
end
local value = false
if ARGV[5] == '1' then
  value = redis.call('GET', KEYS[next_key])
  if not value then
    value = ARGV[3]
    redis.call('SET', KEYS[next_key], value, 'EX', ARGV[6])
  end
end
return {allowed, count, reset, exists, value}
"""


@dataclass(frozen=True)
class Limit:
    name: str
    item: RateLimitItem
    fail_open: bool

    @classmethod
    def of(cls, name: str, spec: str, fail_open: bool) -> Limit:
        return cls(name, parse(spec), fail_open)

    @property
    def amount(self) -> int:
        return int(self.item.amount)

    @property
    def window_seconds(self) -> int:
        return int(self.item.get_expiry())

    @property
    def policy(self) -> str:
        return f"{self.amount};w={self.window_seconds}"


@dataclass(frozen=True)
class Verdict:
    limit: Limit
    remaining: int
    reset_after: int
    # Where this hit is counted, so that it can be taken back.
    key: str = ""
    member: str = ""

    def headers(self) -> dict[str, str]:
        return {
            "RateLimit-Limit": str(self.limit.amount),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_after),
            "RateLimit-Policy": self.limit.policy,
        }


class RateLimiter:
    def __init__(self, redis_url: str, key_prefix: str, timeout_seconds: float = 1.0) -> None:
        # A client of its own with short timeouts: a Redis that hangs must not hold requests.
        self._redis = Redis.from_url(redis_url, socket_timeout=timeout_seconds, socket_connect_timeout=timeout_seconds)
        self._prefix = key_prefix
        self._script = self._redis.register_script(_HIT)
        # A hit's member in its window: unique across gateways without asking the OS for randomness each time.
        self._member_prefix = secrets.token_hex(6) + ":"
        self._members = itertools.count()

    def _key(self, limit: Limit, key: str) -> str:
        return f"{self._prefix}:{limit.name}:{key}"

    async def hit(self, limit: Limit, key: str) -> Verdict | None:
        """Count one request; raise a 429 Problem when the limit is spent. None: not counted (Redis down, fail-open)."""
        verdict, _, _ = await self.hit_and_check(limit, key)
        return verdict

    async def hit_and_check(
        self,
        limit: Limit,
        key: str,
        exists_key: str | None = None,
        value_key: str | None = None,
        value_ttl_seconds: int = 3600,
    ) -> tuple[Verdict | None, bool | None, bytes | None]:
        """`hit`, and in the same round trip whether `exists_key` exists and what `value_key`
        holds, set first to a value never used before (this hit's member, for
        `value_ttl_seconds`) when absent (None: not asked, or Redis is down and the limit fails
        open)."""
        window_key = self._key(limit, key)
        member = f"{self._member_prefix}{next(self._members)}"
        keys = [window_key, *(k for k in (exists_key, value_key) if k is not None)]
        flags = ["1" if exists_key is not None else "0", "1" if value_key is not None else "0"]
        try:
            allowed, count, reset_ms, exists, value = await self._script(
                keys=keys, args=[limit.window_seconds * 1000, limit.amount, member, *flags, value_ttl_seconds]
            )
        except RedisError as error:
            if limit.fail_open:
                log.warning("rate_limit_unchecked", limit=limit.name, error=repr(error))
                return None, None, None
            log.error("rate_limit_unavailable", limit=limit.name, error=repr(error))
            raise Problem(503, "rate-limit-unavailable", "this is unavailable right now; try again shortly") from error
        reset_after = max(0, math.ceil(int(reset_ms) / 1000))
        verdict = Verdict(limit, max(0, limit.amount - int(count)), reset_after, window_key, member)
        if not allowed:
            retry_after = max(1, reset_after)
            raise Problem(
                429,
                "rate-limited",
                f"too many requests ({limit.name}); try again in {retry_after} seconds",
                headers={**verdict.headers(), "Retry-After": str(retry_after)},
                limit=limit.name,
                retry_after=retry_after,
            )
        return verdict, (bool(exists) if exists_key is not None else None), (value or None)

    async def take_back(self, verdict: Verdict) -> Verdict:
        """Uncount a hit that should not have counted; the verdict as it stands after that."""
        try:
            await self._redis.zrem(verdict.key, verdict.member)
        except RedisError as error:
            # The hit stays counted: the client loses one of its requests, nothing worse.
            log.warning("rate_limit_not_taken_back", limit=verdict.limit.name, error=repr(error))
            return verdict
        return Verdict(verdict.limit, min(verdict.limit.amount, verdict.remaining + 1), verdict.reset_after)

    async def aclose(self) -> None:
        await self._redis.aclose()
