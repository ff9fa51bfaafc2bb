"""A user's library generation: a counter in Redis that history raises after every write that
changes how the user's images read back, so that a copy of an answer built from them (the
gateway's page cache) is known to be stale from one read of the counter.

A copy is kept with the generation read before it was built; the counter is raised after the
write is stored. A copy that saw the write, or that was built while it happened, is therefore
never taken for newer than it is: at worst it is thrown away once too often."""

from __future__ import annotations

from collections.abc import Iterable

from redis.asyncio import Redis

# Far longer than any copy is kept: a counter that expired reads as 0, which no copy still kept
# can carry (a copy is kept for seconds, and every write since would have raised it past 0).
GENERATION_TTL_SECONDS = 24 * 3600


def generation_key(key_prefix: str, user_id: str) -> str:
    return f"{key_prefix}:library-generation:{user_id}"


class LibraryGenerations:
    def __init__(self, redis: Redis, key_prefix: str = "facerestore") -> None:
        self._redis = redis
        self._prefix = key_prefix

    def key(self, user_id: str) -> str:
        return generation_key(self._prefix, user_id)

    async def bump(self, user_ids: Iterable[str]) -> None:
        """Raise each user's counter (one round trip); RedisError reaches the caller."""
        keys = sorted({self.key(user_id) for user_id in user_ids if user_id})
        if not keys:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.incr(key)
                pipe.expire(key, GENERATION_TTL_SECONDS)
            await pipe.execute()

    async def current(self, user_id: str) -> int:
        value = await self._redis.get(self.key(user_id))
        return int(value) if value is not None else 0
