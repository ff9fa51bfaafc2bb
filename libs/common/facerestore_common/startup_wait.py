"""Waiting at start-up for the servers a service cannot start without.

A client's first call fails at once (or after its own timeout) when its server is not there,
and a service started during an outage would exit: under Kubernetes, to wait out
CrashLoopBackOff's growing back-off long after the server is back. `wait_for_dependency` tries
again, with capped exponential back-off and jitter, until the start-up's deadline, logging every
failed attempt with its cause and never a credential; then DependencyUnavailableError naming
the server's address. The adaptors are next to their clients (broker_connect, mongo,
redis_connect, storage).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar
from urllib.parse import unquote

from facerestore_common.logging import get_logger

log = get_logger(__name__)

T = TypeVar("T")

FIRST_DELAY_SECONDS = 0.5
MAX_DELAY_SECONDS = 10.0


class DependencyUnavailableError(ConnectionError):
    """A server that start-up needs did not answer before the start-up deadline."""


class StartupDeadline:
    """When a service's start-up stops waiting for its dependencies: `seconds` after this was
    made (STARTUP_WAIT_SECONDS), for all of them together, so that the time start-up can take
    (and the startup probe allows) does not grow with the number of dependencies. 0: no waiting."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._ends_at = time.monotonic() + seconds

    def remaining(self) -> float:
        return self._ends_at - time.monotonic()


def host_port(host: str, port: int) -> str:
    """host:port, an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def describe_error(error: BaseException, secrets: Iterable[str] = ()) -> str:
    """The error as "Type: message", with each secret (and its percent-decoded form, as a URL
    would carry it) blanked should the message quote it."""
    text = f"{type(error).__name__}: {error}"
    for secret in secrets:
        for form in {secret, unquote(secret)}:
            if form:
                text = text.replace(form, "***")
    return text


def backoff_seconds(failed_attempts: int) -> float:
    """The pause after the n-th failed attempt: doubling from FIRST_DELAY_SECONDS up to
    MAX_DELAY_SECONDS, its upper half at random, so that services restarted together by one
    outage do not all knock at the same moments."""
    ceiling = min(FIRST_DELAY_SECONDS * 2 ** (failed_attempts - 1), MAX_DELAY_SECONDS)
    return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not a secret


async def wait_for_dependency(
    attempt: Callable[[], Awaitable[T]],
    *,
    dependency: str,
    address: str,
    retry_on: tuple[type[BaseException], ...],
    deadline: StartupDeadline,
    secrets: Iterable[str] = (),
    fatal: tuple[type[BaseException], ...] = (),
    **context: str,
) -> T:
    """attempt(), tried again on `retry_on` errors (except `fatal` ones, e.g. a wrong password,
    raised at once) until `deadline`; then DependencyUnavailableError naming `dependency` at
    `address` and the last cause. The last attempt starts at the deadline at the latest, so this
    may take one attempt's own time limit longer. A deadline of 0 s: one attempt, its error
    raised as it is. `context`: more fields for the log lines (e.g. which connection)."""
    if deadline.seconds <= 0:
        return await attempt()
    secrets = [secret for secret in secrets if secret]
    where = {"dependency": dependency, "address": address, **context}
    attempts = 0
    while True:
        attempts += 1
        try:
            result = await attempt()
        except fatal:
            raise
        except retry_on as error:
            cause = describe_error(error, secrets)
            remaining = deadline.remaining()
            if remaining <= 0:
                log.error("startup_dependency_gave_up", **where, attempts=attempts, error=cause)
                raise DependencyUnavailableError(
                    f"the {dependency} at {address} did not answer within the {deadline.seconds:g} s "
                    f"start-up wait ({attempts} attempt{'s' if attempts > 1 else ''}; the last: {cause})"
                ) from error
            delay = min(backoff_seconds(attempts), remaining)
            log.warning(
                "startup_dependency_unavailable",
                **where,
                attempt=attempts,
                error=cause,
                retry_in_seconds=round(delay, 2),
                gives_up_in_seconds=round(remaining, 2),
            )
            await asyncio.sleep(delay)
            continue
        if attempts > 1:
            log.info("startup_dependency_available", **where, attempts=attempts)
        return result
