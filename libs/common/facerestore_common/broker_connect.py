"""Waiting for the broker at start-up.

aio-pika's robust connection reconnects only after a first success: its first attempt raises
at once when the broker is not there, and a service started during a broker outage would exit
(and, under Kubernetes, wait out CrashLoopBackOff's growing back-off after the broker is back).
`connect_when_available` tries again, with capped exponential back-off and jitter, until a
deadline, logging every failed attempt with its cause and never the URL's credentials.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar
from urllib.parse import unquote, urlsplit

from aio_pika.exceptions import CONNECTION_EXCEPTIONS

from facerestore_common.logging import get_logger

log = get_logger(__name__)

T = TypeVar("T")

FIRST_DELAY_SECONDS = 0.5
MAX_DELAY_SECONDS = 10.0
# Each attempt's own limit, so that a broker that takes the TCP connection but never answers
# does not hold an attempt for the OS's connect timeout. A robust connection keeps the timeout
# of the attempt that opened it for its reconnections, so it is a fixed value, not what is
# left of the deadline.
ATTEMPT_TIMEOUT_SECONDS = 10.0


class BrokerUnavailableError(ConnectionError):
    """The broker did not accept a connection before the start-up deadline."""


def broker_address(url: str) -> str:
    """host:port of an AMQP URL, without its credentials (what logs and errors name)."""
    parsed = urlsplit(url)
    host = parsed.hostname or "localhost"
    port = parsed.port or (5671 if parsed.scheme == "amqps" else 5672)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def describe_error(error: BaseException, url: str) -> str:
    """The error as "Type: message", with the URL's password blanked should the message quote it."""
    text = f"{type(error).__name__}: {error}"
    password = urlsplit(url).password
    if password:
        for form in {password, unquote(password)}:
            text = text.replace(form, "***")
    return text


def backoff_seconds(failed_attempts: int) -> float:
    """The pause after the n-th failed attempt: doubling from FIRST_DELAY_SECONDS up to
    MAX_DELAY_SECONDS, its upper half at random, so that services restarted together by one
    outage do not all knock at the same moments."""
    ceiling = min(FIRST_DELAY_SECONDS * 2 ** (failed_attempts - 1), MAX_DELAY_SECONDS)
    return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not a secret


async def connect_when_available(
    open_connection: Callable[[float | None], Awaitable[T]],
    url: str,
    wait_seconds: float,
    *,
    name: str,
) -> T:
    """open_connection(attempt_timeout), tried again on connection errors until `wait_seconds`
    have passed; then BrokerUnavailableError naming the broker's address and the last cause.
    The last attempt starts at the deadline at the latest, so this may take up to one
    ATTEMPT_TIMEOUT_SECONDS longer. `wait_seconds` 0: one attempt, its error raised as it is."""
    if wait_seconds <= 0:
        return await open_connection(None)
    address = broker_address(url)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_seconds
    attempt = 0
    while True:
        attempt += 1
        try:
            connection = await open_connection(ATTEMPT_TIMEOUT_SECONDS)
        except CONNECTION_EXCEPTIONS as error:
            cause = describe_error(error, url)
            remaining = deadline - loop.time()
            if remaining <= 0:
                log.error("broker_connect_gave_up", broker=address, connection=name, attempts=attempt, error=cause)
                raise BrokerUnavailableError(
                    f"the broker at {address} did not accept a connection within {wait_seconds:g} s "
                    f"({attempt} attempts; the last: {cause})"
                ) from error
            delay = min(backoff_seconds(attempt), remaining)
            log.warning(
                "broker_connect_failed",
                broker=address,
                connection=name,
                attempt=attempt,
                error=cause,
                retry_in_seconds=round(delay, 2),
                gives_up_in_seconds=round(remaining, 2),
            )
            await asyncio.sleep(delay)
            continue
        if attempt > 1:
            log.info("broker_connected", broker=address, connection=name, attempts=attempt)
        return connection
