"""EventBus.connect() at start-up while the broker is not there yet: a TcpRelay in front of the
machine's real RabbitMQ refuses connections (cut) and later forwards them (restore), so the
shared broker itself is never stopped. Exchanges, queues and databases are named from
`unique_name` and removed at the end."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aio_pika
import pytest
from structlog.testing import capture_logs

from facerestore.events.v1 import events_pb2
from facerestore_common import mongo
from facerestore_common.broker_connect import broker_address
from facerestore_common.events import EventBus, ProcessedEvents, new_envelope
from facerestore_common.startup_wait import DependencyUnavailableError, StartupDeadline, describe_error

if TYPE_CHECKING:
    from conftest import TcpRelay

SAFETY_SECONDS = 30.0  # bounds a hung test, never a measurement


def through(relay: TcpRelay, amqp_url: str) -> str:
    """amqp_url with its host and port replaced by the relay's."""
    parts = urlsplit(amqp_url)
    return parts._replace(netloc=f"{parts.username}:{parts.password}@127.0.0.1:{relay.port}").geturl()


def failures(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [entry for entry in logs if entry["event"] == "startup_dependency_unavailable"]


async def until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + SAFETY_SECONDS
    while not condition():
        assert time.monotonic() < deadline, "condition not met"
        await asyncio.sleep(0.05)


@pytest.fixture
async def refusing_relay(amqp_url: str, tcp_relay: Callable[[str], Awaitable[TcpRelay]]) -> TcpRelay:
    """A relay to the real broker that refuses connections until restore()."""
    broker = urlsplit(amqp_url)
    relay = await tcp_relay(f"{broker.hostname}:{broker.port or 5672}")
    await relay.cut()
    return relay


@pytest.fixture
async def cleanup(amqp_url: str, mongo_url: str, unique_name: str) -> AsyncIterator[list[EventBus]]:
    """Buses appended here are closed, and everything named after unique_name removed, at the end."""
    buses: list[EventBus] = []
    yield buses
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        for bus in buses:
            await bus.close()
            for queue in bus.consumer_queues("history"):
                await channel.queue_delete(queue)
            await channel.exchange_delete(bus.dead_letter_exchange)
        await channel.exchange_delete(f"{unique_name}.events")
    database = mongo.connect(mongo_url, unique_name)
    await database.client.drop_database(unique_name)
    database.client.close()


async def test_connect_waits_for_a_broker_that_comes_up_then_publishes_and_consumes(
    amqp_url: str, mongo_url: str, unique_name: str, refusing_relay: TcpRelay, cleanup: list[EventBus]
) -> None:
    bus = EventBus(
        through(refusing_relay, amqp_url),
        f"{unique_name}.events",
        unique_name,
        "connect-test",
        topology={"history": ["image.uploaded"]},
        startup_deadline=StartupDeadline(120),
    )
    cleanup.append(bus)
    with capture_logs() as logs:
        connecting = asyncio.create_task(bus.connect())
        # Refused, and tried again: still waiting, and the probes' question answers "no".
        await until(lambda: len(failures(logs)) >= 2)
        assert not connecting.done()
        assert not bus.is_connected()

        await refusing_relay.restore()
        await asyncio.wait_for(connecting, SAFETY_SECONDS)

    assert bus.is_connected()
    failed = failures(logs)
    assert [entry["attempt"] for entry in failed] == list(range(1, len(failed) + 1))
    for entry in failed:
        assert entry["dependency"] == "broker"
        assert entry["address"] == f"127.0.0.1:{refusing_relay.port}"
        assert entry["connection"] == "connect-test"
        assert entry["log_level"] == "warning"
        assert "Connect" in entry["error"] or "refused" in entry["error"].lower(), entry["error"]
        assert entry["retry_in_seconds"] > 0
    assert "guest" not in json.dumps(logs, default=str)
    connected = [entry for entry in logs if entry["event"] == "startup_dependency_available"]
    assert [entry["attempts"] for entry in connected] == [len(failed) + 1]

    received: list[events_pb2.Envelope] = []
    got = asyncio.Event()

    async def handler(envelope: events_pb2.Envelope) -> None:
        received.append(envelope)
        got.set()

    database = mongo.connect(mongo_url, unique_name)
    try:
        await bus.consume("history", ["image.uploaded"], handler, ProcessedEvents(database["processed"], "history"), 1)
        envelope = new_envelope(
            "upload",
            image_uploaded=events_pb2.ImageUploaded(image_id="img-1", user_id="user-1", original_key="originals/a.jpg"),
        )
        await bus.publish(envelope)
        await asyncio.wait_for(got.wait(), SAFETY_SECONDS)
    finally:
        database.client.close()
    assert received == [envelope]


async def test_connect_gives_up_after_its_deadline_naming_the_broker(
    amqp_url: str, unique_name: str, refusing_relay: TcpRelay, cleanup: list[EventBus]
) -> None:
    started = time.monotonic()
    bus = EventBus(
        through(refusing_relay, amqp_url),
        f"{unique_name}.events",
        unique_name,
        "connect-test",
        startup_deadline=StartupDeadline(1.5),
    )
    cleanup.append(bus)
    with capture_logs() as logs, pytest.raises(DependencyUnavailableError) as raised:
        await bus.connect()
    waited = time.monotonic() - started

    message = str(raised.value)
    assert f"the broker at 127.0.0.1:{refusing_relay.port}" in message
    assert "within the 1.5 s start-up wait" in message
    assert "guest" not in message
    assert isinstance(raised.value.__cause__, OSError)
    assert waited >= 1.5  # it did wait out the deadline
    assert not bus.is_connected()
    failed = failures(logs)
    gave_up = [entry for entry in logs if entry["event"] == "startup_dependency_gave_up"]
    assert len(gave_up) == 1
    assert gave_up[0]["attempts"] == len(failed) + 1 >= 2
    assert gave_up[0]["log_level"] == "error"


async def test_without_a_wait_connect_fails_at_the_first_refusal(
    amqp_url: str, unique_name: str, refusing_relay: TcpRelay, cleanup: list[EventBus]
) -> None:
    # What the publishers that reconnect on their own schedule (gateway, auth) rely on.
    bus = EventBus(through(refusing_relay, amqp_url), f"{unique_name}.events", unique_name, "connect-test")
    cleanup.append(bus)
    with capture_logs() as logs, pytest.raises(OSError) as raised:
        await bus.connect()
    assert not isinstance(raised.value, DependencyUnavailableError)
    assert failures(logs) == []


def test_logged_causes_and_addresses_never_carry_the_password() -> None:
    url = "amqp://facerestore:p%40ss%2Fword@rabbit.internal/prod"
    error = ConnectionError("cannot reach amqp://facerestore:p@ss/word@rabbit.internal (p%40ss%2Fword)")
    described = describe_error(error, [urlsplit(url).password or ""])
    assert described == "ConnectionError: cannot reach amqp://facerestore:***@rabbit.internal (***)"
    assert broker_address(url) == "rabbit.internal:5672"
    assert broker_address("amqps://user:secret@[::1]/") == "[::1]:5671"
