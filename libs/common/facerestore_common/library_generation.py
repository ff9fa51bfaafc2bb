"""A user's library generation: a value in Redis that history replaces after every write that
changes how the user's images read back, so that a copy of an answer built from them (the
gateway's page cache) is known to be stale from one read of the value.

A copy is kept with the generation read before it was built; the value is replaced after the
write is stored. A copy that saw the write, or that was built while it happened, is therefore
never taken for newer than it is: at worst it is thrown away once too often.

Every generation is a value never used before, set by a write (here) or, when the key is absent,
by the first read that finds it so (the gateway's request context, in the same Lua call). So a key
that expired or that Redis evicted can never come back as a value an old copy carries: a counter
would (an expired counter counts from 1 again, the value a copy built just before it expired has)."""

from __future__ import annotations

import secrets
from collections.abc import Iterable

from redis.asyncio import Redis

# Far longer than any copy is kept (seconds), so that users who read often keep one value.
GENERATION_TTL_SECONDS = 24 * 3600


def generation_key(key_prefix: str, user_id: str) -> str:
    return f"{key_prefix}:library-generation:{user_id}"


def new_generation() -> str:
    return secrets.token_hex(8)


class LibraryGenerations:
    def __init__(self, redis: Redis, key_prefix: str = "facerestore") -> None:
        self._redis = redis
        self._prefix = key_prefix

    def key(self, user_id: str) -> str:
        return generation_key(self._prefix, user_id)

    def _keys(self, user_ids: Iterable[str]) -> list[str]:
        return sorted({self.key(user_id) for user_id in user_ids if user_id})

    async def bump(self, user_ids: Iterable[str]) -> None:
        """Give each user a new generation (one round trip); RedisError reaches the caller."""
        keys = self._keys(user_ids)
        if not keys:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.set(key, new_generation(), ex=GENERATION_TTL_SECONDS)
            await pipe.execute()

    async def forget(self, user_ids: Iterable[str]) -> None:
        """Remove the users' generations (an erased user's id kept in no key); a later read starts
        a new one, which no copy carries. RedisError reaches the caller."""
        keys = self._keys(user_ids)
        if keys:
            await self._redis.delete(*keys)

    async def current(self, user_id: str) -> bytes | None:
        value = await self._redis.get(self.key(user_id))
        return value.encode() if isinstance(value, str) else value
