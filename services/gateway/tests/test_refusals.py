"""Rate-limit refusals are counted by limit (Prometheus) and tallied per hour for the admins'
statistics: one `activity.recorded` event per limit and hour reaches a real RabbitMQ queue with
the count, and what the broker did not take waits for the next flush."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aio_pika
import pytest
from prometheus_client import REGISTRY

from facerestore.events.v1 import events_pb2
from facerestore_common.events import EventBus
from gateway_service.refusals import HOUR_MS, RefusalTally


@pytest.fixture
async def observed(amqp_url: str, unique_name: str) -> AsyncIterator[aio_pika.abc.AbstractQueue]:
    connection = await aio_pika.connect(amqp_url)
    channel = await connection.channel()
    exchange = await channel.declare_exchange(f"{unique_name}.events", aio_pika.ExchangeType.TOPIC, durable=True)
    queue = await channel.declare_queue(f"{unique_name}.observer", exclusive=True)
    await queue.bind(exchange, "activity.recorded")
    yield queue
    await channel.exchange_delete(f"{unique_name}.events")
    await channel.exchange_delete(f"{unique_name}.events.dlx")
    await connection.close()


def refused(limit: str) -> float:
    return REGISTRY.get_sample_value("gateway_rate_limit_refusals_total", {"limit": limit}) or 0.0


async def test_refusals_are_tallied_per_limit_and_sent_once_the_broker_takes_them(
    observed: aio_pika.abc.AbstractQueue, amqp_url: str, unique_name: str
) -> None:
    tally = RefusalTally()
    before = refused("uploads-per-user")
    for limit in ("uploads-per-user", "uploads-per-user", "uploads-per-user", "requests-per-ip"):
        tally.count(limit)
    assert refused("uploads-per-user") == before + 3
    (hour, _), *_ = tally.pending()
    assert hour % HOUR_MS == 0
    assert sorted(tally.pending().values()) == [1, 3]

    bus = EventBus(amqp_url, f"{unique_name}.events", unique_name, "gateway", robust=False)
    assert await tally.flush(bus) == 0  # not connected: nothing is lost
    assert sorted(tally.pending().values()) == [1, 3]

    await bus.connect()
    try:
        assert await tally.flush(bus) == 4
        assert tally.pending() == {}
    finally:
        await bus.close()

    received: dict[str, events_pb2.ActivityRecorded] = {}
    for _ in range(100):
        message = await observed.get(no_ack=True, fail=False)
        if message is not None:
            activity = events_pb2.Envelope.FromString(message.body).activity_recorded
            received[activity.labels["limit"]] = activity
        if len(received) == 2:
            break
        await asyncio.sleep(0.05)
    assert {limit: activity.count for limit, activity in received.items()} == {
        "uploads-per-user": 3,
        "requests-per-ip": 1,
    }
    assert {activity.kind for activity in received.values()} == {"rate_limit.refused"}
    assert all(activity.at.ToMilliseconds() == hour for activity in received.values())
