"""Requests refused by a rate limit, by limit: a Prometheus counter, and a tally per hour that
is sent to the admins' statistics as `activity.recorded` events (kind `rate_limit.refused`, with
the count), one event per limit and hour every few seconds, whatever the refusal rate.

Every 429 the gateway answers is counted here, its own limits' (per IP, uploads, searches) and
those auth's sign-in limits report through it. The tally lives in the process until the broker
confirms it: while the broker is away it keeps growing (one number per limit and hour), and it
is sent once more at shutdown; a gateway that crashes loses at most one interval's counts (the
Prometheus counter, scraped from every pod, is the live number)."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter as Tally

from prometheus_client import Counter

from facerestore_common.activity import activity_envelope, stop_task
from facerestore_common.events import EventBus
from facerestore_common.logging import get_logger
from facerestore_common.timeutil import now_ms
from facerestore_common.topology import CONSUMER_BINDINGS
from gateway_service.settings import Settings

log = get_logger(__name__)

REFUSALS = Counter("gateway_rate_limit_refusals_total", "Requests refused by a rate limit (429)", ["limit"])
HOUR_MS = 3_600_000
KIND = "rate_limit.refused"


# The gateway's own limits (app.py), whose series exist from the start; auth's appear when first hit.
GATEWAY_LIMITS = ("requests-per-ip", "uploads-per-user", "searches-per-user")


class RefusalTally:
    def __init__(self) -> None:
        self._counts: Tally[tuple[int, str]] = Tally()
        for limit in GATEWAY_LIMITS:
            REFUSALS.labels(limit)

    def count(self, limit: str) -> None:
        REFUSALS.labels(limit).inc()
        now = now_ms()
        self._counts[(now - now % HOUR_MS, limit)] += 1

    def pending(self) -> dict[tuple[int, str], int]:
        return dict(self._counts)

    async def flush(self, bus: EventBus, timeout_seconds: float = 5.0) -> int:
        """Send what is tallied; returns how many refusals the broker confirmed. What it did not
        confirm stays in the tally for the next flush."""
        counts, self._counts = self._counts, Tally()
        sent = 0
        try:
            for (hour_ms, limit), count in list(counts.items()):
                envelope = activity_envelope(
                    "gateway", uuid.uuid4().hex, KIND, at_ms=hour_ms, count=count, labels={"limit": limit}
                )
                await asyncio.wait_for(bus.publish(envelope), timeout_seconds)
                del counts[(hour_ms, limit)]
                sent += count
        except Exception as error:
            log.warning("refusal_tally_deferred", waiting=sum(counts.values()), error=repr(error))
        finally:
            self._counts.update(counts)
        return sent

    async def run(self, bus: EventBus, interval_seconds: float) -> None:
        """Send the tally every interval, connecting (again) first when the broker is not there."""
        while True:
            await asyncio.sleep(interval_seconds)
            if not self._counts:
                continue
            if not bus.is_connected():
                try:
                    await bus.connect()
                except Exception as error:
                    log.warning("refusal_broker_unavailable", error=repr(error), waiting=sum(self._counts.values()))
                    continue
            await self.flush(bus)


class RefusalReporter:
    """The tally, its bus and its flushing task, for the gateway's lifetime (`start` in the app's
    lifespan, `stop` at its end); problem responses count 429s into `tally`."""

    def __init__(self, tally: RefusalTally, bus: EventBus, task: asyncio.Task[None]) -> None:
        self.tally = tally
        self._bus = bus
        self._task = task

    @classmethod
    def start(cls, settings: Settings) -> RefusalReporter:
        tally = RefusalTally()
        bus = EventBus(
            settings.amqp_url.get_secret_value(),
            settings.events_exchange,
            settings.queue_prefix,
            "gateway",
            topology=CONSUMER_BINDINGS,
            robust=False,  # run() connects it again after an outage
        )
        return cls(tally, bus, asyncio.create_task(tally.run(bus, settings.activity_flush_seconds)))

    async def stop(self) -> None:
        """End the flushing task, send what is left (if the broker is there) and close the bus."""
        await stop_task(self._task)
        if self.tally.pending():
            try:
                if not self._bus.is_connected():
                    await asyncio.wait_for(self._bus.connect(), 3.0)
                await self.tally.flush(self._bus)
            except Exception as error:
                log.error("refusal_tally_lost", refusals=sum(self.tally.pending().values()), error=repr(error))
        await self._bus.close()
