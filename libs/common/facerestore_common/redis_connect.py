"""Waiting for Redis at start-up (startup_wait), never logging its password."""

from __future__ import annotations

from redis.asyncio import Redis
from redis.exceptions import AuthenticationError, AuthorizationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from facerestore_common.startup_wait import StartupDeadline, host_port, wait_for_dependency

DEFAULT_PORT = 6379


def redis_address(redis: Redis) -> str:
    """Where the client connects: host:port, or a Unix socket's path."""
    options = redis.connection_pool.connection_kwargs
    if options.get("path"):
        return str(options["path"])
    return host_port(str(options.get("host") or "localhost"), int(options.get("port") or DEFAULT_PORT))


async def ping_when_available(redis: Redis, deadline: StartupDeadline) -> None:
    """A ping that waits until `deadline` for Redis (a Redis still loading its data answers with an
    error that counts as not there yet); a refused password is raised at once."""

    async def ping() -> None:
        await redis.ping()

    await wait_for_dependency(
        ping,
        dependency="redis",
        address=redis_address(redis),
        retry_on=(RedisConnectionError, RedisTimeoutError, OSError),
        fatal=(AuthenticationError, AuthorizationError),
        deadline=deadline,
        secrets=[str(redis.connection_pool.connection_kwargs.get("password") or "")],
    )
