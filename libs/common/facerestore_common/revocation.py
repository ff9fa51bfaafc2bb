"""Ended sessions, kept in Redis until their last access token has expired, so that
logout, refresh-token reuse and bans take effect at once rather than after 15 minutes."""

from __future__ import annotations

from redis.asyncio import Redis
from redis.exceptions import RedisError

from facerestore_common.errors import Unavailable


class SessionRevocations:
    def __init__(self, redis: Redis, key_prefix: str = "facerestore") -> None:
        self._redis = redis
        self._prefix = f"{key_prefix}:revoked-session"

    def _key(self, session_id: str) -> str:
        return f"{self._prefix}:{session_id}"

    async def revoke(self, session_id: str, ttl_seconds: int) -> None:
        try:
            await self._redis.set(self._key(session_id), "1", ex=max(1, ttl_seconds))
        except RedisError as error:
            raise Unavailable(
                "the session could not be ended right now; try again", reason="session-store-unavailable"
            ) from error

    async def is_revoked(self, session_id: str) -> bool:
        # Fails closed: if revocations cannot be read, no token is taken as valid.
        try:
            return bool(await self._redis.exists(self._key(session_id)))
        except RedisError as error:
            raise Unavailable("sessions cannot be checked right now", reason="session-store-unavailable") from error
