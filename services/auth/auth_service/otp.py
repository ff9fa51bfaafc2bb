"""One-time codes: random, stored only as a keyed hash in Redis, short-lived,
limited in tries, and consumed atomically so a code works exactly once."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from enum import Enum

from redis.asyncio import Redis

# Deletes the code only if it is still the one that was compared: of two concurrent
# verifications of one code, exactly one sees 1.
_CONSUME = """
if redis.call('HGET', KEYS[1], 'digest') == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# Counts a wrong try; the code dies when the tries are used up.
_WRONG_TRY = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local tries = redis.call('HINCRBY', KEYS[1], 'wrong', 1)
if tries >= tonumber(ARGV[1]) then redis.call('DEL', KEYS[1]) end
return tries
"""


class Verification(Enum):
    OK = "ok"
    WRONG = "wrong"
    MISSING = "missing"


class OtpStore:
    def __init__(self, redis: Redis, secret: bytes, ttl_seconds: int, max_attempts: int, prefix: str = "otp") -> None:
        self._redis = redis
        self._secret = secret
        self._ttl = ttl_seconds
        self._max_attempts = max_attempts
        self._prefix = prefix
        self._consume = redis.register_script(_CONSUME)
        self._wrong_try = redis.register_script(_WRONG_TRY)

    def _key(self, phone: str) -> str:
        return f"{self._prefix}:{phone}"

    def _digest(self, phone: str, code: str) -> str:
        return hmac.new(self._secret, f"{phone}:{code}".encode(), hashlib.sha256).hexdigest()

    @property
    def ttl_seconds(self) -> int:
        return self._ttl

    async def issue(self, phone: str) -> str:
        """Create a new code for the phone, replacing any earlier one."""
        code = f"{secrets.randbelow(1_000_000):06d}"
        key = self._key(phone)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(key)
            pipe.hset(key, mapping={"digest": self._digest(phone, code), "wrong": 0})
            pipe.expire(key, self._ttl)
            await pipe.execute()
        return code

    async def discard(self, phone: str) -> None:
        await self._redis.delete(self._key(phone))

    async def verify(self, phone: str, code: str) -> Verification:
        key = self._key(phone)
        stored = await self._redis.hget(key, "digest")
        if stored is None:
            return Verification.MISSING
        stored_digest = stored.decode() if isinstance(stored, bytes) else str(stored)
        candidate = self._digest(phone, code)
        if hmac.compare_digest(stored_digest, candidate):
            if await self._consume(keys=[key], args=[candidate]) == 1:
                return Verification.OK
            return Verification.MISSING
        await self._wrong_try(keys=[key], args=[self._max_attempts])
        return Verification.WRONG
