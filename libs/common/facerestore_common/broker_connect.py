"""Waiting for the broker at start-up.

aio-pika's robust connection reconnects only after a first success: its first attempt raises
at once when the broker is not there. `connect_when_available` makes that first connection
wait for the broker (startup_wait), never logging the URL's credentials.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import TypeVar
from urllib.parse import urlsplit

from aio_pika.exceptions import CONNECTION_EXCEPTIONS

from facerestore_common.startup_wait import StartupDeadline, host_port, wait_for_dependency

T = TypeVar("T")

# Each attempt's own limit, so that a broker that takes the TCP connection but never answers
# does not hold an attempt for the OS's connect timeout. A robust connection keeps the timeout
# of the attempt that opened it for its reconnections, so it is a fixed value, not what is
# left of the deadline.
ATTEMPT_TIMEOUT_SECONDS = 10.0


def broker_address(url: str) -> str:
    """host:port of an AMQP URL, without its credentials (what logs and errors name)."""
    parsed = urlsplit(url)
    return host_port(parsed.hostname or "localhost", parsed.port or (5671 if parsed.scheme == "amqps" else 5672))


async def connect_when_available(
    open_connection: Callable[[float | None], Awaitable[T]],
    url: str,
    deadline: StartupDeadline | None,
    *,
    name: str,
) -> T:
    """open_connection(attempt_timeout), tried again on connection errors until `deadline`
    (DependencyUnavailableError naming the broker's address after it). No deadline, or one of
    0 s: one attempt without a limit of its own, its error raised as it is."""
    if deadline is None or deadline.seconds <= 0:
        return await open_connection(None)
    return await wait_for_dependency(
        functools.partial(open_connection, ATTEMPT_TIMEOUT_SECONDS),
        dependency="broker",
        address=broker_address(url),
        retry_on=CONNECTION_EXCEPTIONS,
        deadline=deadline,
        secrets=[urlsplit(url).password or ""],
        connection=name,
    )
