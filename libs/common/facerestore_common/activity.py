"""Activity records: what users did or what happened to them, told by the service that knows it
(auth: sign-ups, sign-ins, codes, role changes, bans; history: searches), for the admin
service's usage statistics and each user's activity.

A record is written first to the recording service's own MongoDB (an outbox), then a relay
publishes it as an `activity.recorded` event and removes it. Recording never waits for the
broker, so a sign-in does not fail while it is down, and nothing recorded is lost: the relay
publishes what waits once the broker is back. The outbox document's id is the event id, so a
record published twice (the relay died between the confirm and the delete) counts once."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from typing import Any, Protocol

from motor.motor_asyncio import AsyncIOMotorDatabase

from facerestore.events.v1 import events_pb2
from facerestore_common.events import EventBus
from facerestore_common.logging import get_logger
from facerestore_common.outbox import OUTBOX_BACKLOG, OUTBOX_OLDEST_AGE
from facerestore_common.telemetry import current_traceparent
from facerestore_common.timeutil import ms_to_timestamp, now_ms

log = get_logger(__name__)

ACTIVITY_EVENT = "activity.recorded"


class ActivityRecorder(Protocol):
    async def record(self, kind: str, user_id: str = "", **labels: str) -> None: ...


def activity_envelope(
    producer: str,
    event_id: str,
    kind: str,
    *,
    user_id: str = "",
    at_ms: int,
    count: int = 1,
    labels: Mapping[str, str] | None = None,
    traceparent: str = "",
) -> events_pb2.Envelope:
    envelope = events_pb2.Envelope(
        event_id=event_id,
        type=ACTIVITY_EVENT,
        traceparent=traceparent,
        producer=producer,
        activity_recorded=events_pb2.ActivityRecorded(
            kind=kind, user_id=user_id, at=ms_to_timestamp(at_ms), count=count, labels=dict(labels or {})
        ),
    )
    envelope.occurred_at.FromMilliseconds(now_ms())
    return envelope


class ActivityOutbox:
    """Records activity in `<database>.activity_outbox`; `run` relays it to the bus."""

    def __init__(
        self, database: AsyncIOMotorDatabase, producer: str, batch: int = 100, publish_timeout_seconds: float = 5.0
    ) -> None:
        self._records = database["activity_outbox"]
        self._producer = producer
        self._batch = batch
        self._publish_timeout = publish_timeout_seconds
        self._wake = asyncio.Event()

    async def create_indexes(self) -> None:
        await self._records.create_index("at_ms")

    async def record(self, kind: str, user_id: str = "", **labels: str) -> None:
        await self._records.insert_one(
            {
                "_id": uuid.uuid4().hex,
                "kind": kind,
                "user_id": user_id,
                "labels": {key: str(value) for key, value in labels.items()},
                "at_ms": now_ms(),
                "traceparent": current_traceparent(),
            }
        )
        self._wake.set()

    def _envelope(self, doc: dict[str, Any]) -> events_pb2.Envelope:
        return activity_envelope(
            self._producer,
            doc["_id"],
            doc["kind"],
            user_id=doc.get("user_id", ""),
            at_ms=int(doc["at_ms"]),
            labels=doc.get("labels") or {},
            traceparent=doc.get("traceparent", ""),
        )

    async def relay_once(self, bus: EventBus) -> int:
        """Publish what waits, oldest first; returns how many the broker confirmed. Stops at the
        first refusal (the broker is away: the rest waits for the next round)."""
        published = 0
        docs = await self._records.find({}).sort("at_ms", 1).limit(self._batch).to_list(None)
        for doc in docs:
            try:
                await asyncio.wait_for(bus.publish(self._envelope(doc)), self._publish_timeout)
            except Exception as error:
                log.warning("activity_relay_deferred", waiting=len(docs) - published, error=repr(error))
                break
            await self._records.delete_one({"_id": doc["_id"]})
            published += 1
        return published

    async def measure(self) -> None:
        """The backlog gauges (records waiting, the oldest one's age)."""
        oldest = await self._records.find({}, {"at_ms": 1}).sort("at_ms", 1).limit(1).to_list(None)
        OUTBOX_BACKLOG.labels("activity").set(await self._records.count_documents({}))
        OUTBOX_OLDEST_AGE.labels("activity").set(max(0.0, (now_ms() - oldest[0]["at_ms"]) / 1000) if oldest else 0.0)

    async def run(
        self,
        bus: EventBus,
        interval_seconds: float = 5.0,
        *,
        reconnect: bool = False,
        measure_every_seconds: float = 15.0,
    ) -> None:
        """Relay as soon as this process records something, and every interval (records another
        process wrote, such as the CLI's, and retries after a refusal); the gauges are brought up to
        date at most every `measure_every_seconds` (the database is shared: idle rounds stay cheap).
        With `reconnect` the relay owns the bus (a non-robust one) and connects it again whenever
        the broker went away; otherwise the bus's owner keeps it connected."""
        measured_at = 0.0
        loop = asyncio.get_running_loop()
        while True:
            self._wake.clear()
            if reconnect and not bus.is_connected():
                await _try_connect(bus)
            try:
                published = 0
                while bus.is_connected():
                    relayed = await self.relay_once(bus)
                    published += relayed
                    if relayed < self._batch:
                        break
                if published or loop.time() - measured_at >= measure_every_seconds:
                    await self.measure()
                    measured_at = loop.time()
            except Exception:
                log.error("activity_relay_failed", exc_info=True)
            try:
                await asyncio.wait_for(self._wake.wait(), interval_seconds)
            except TimeoutError:
                pass


async def stop_task(task: asyncio.Task[None], timeout_seconds: float = 5.0) -> None:
    """Cancel a relay task and give it a bounded time to end: aio-pika's robust connection answers
    a cancelled connection attempt by scheduling another, so waiting for ever could hang a shutdown."""
    task.cancel()
    await asyncio.wait({task}, timeout=timeout_seconds)


async def _try_connect(bus: EventBus) -> bool:
    try:
        await bus.connect()
    except Exception as error:
        log.warning("activity_broker_unavailable", error=repr(error))
        return False
    return True
