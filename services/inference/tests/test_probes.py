"""The worker's /healthz and /readyz on the metrics server, over real HTTP, with the event bus
consuming from the machine's RabbitMQ: liveness fails while the event loop is blocked or a
message is held past the limit and recovers after; readiness follows start-up and the broker
connection (cut through a relay), while liveness does not fail for a broker outage alone."""

from __future__ import annotations

import asyncio
import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aio_pika
import pytest

from facerestore.events.v1 import events_pb2
from facerestore_common import mongo
from facerestore_common.events import EventBus, ProcessedEvents, new_envelope
from facerestore_common.health import LoopHeartbeat
from facerestore_common.metrics_server import MetricsServer
from inference_service.probes import WorkerProbes

if TYPE_CHECKING:
    from conftest import TcpRelay

MAX_STALL = 0.5
MAX_HOLD = 0.6


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def fetch(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@dataclass
class Worker:
    bus: EventBus
    probes: WorkerProbes
    base_url: str
    handled: list[str]
    release: asyncio.Event
    holding: asyncio.Event

    async def get(self, path: str) -> tuple[int, dict[str, Any]]:
        # From another thread, as the kubelet asks: the event loop may be the thing that is stuck.
        return await asyncio.to_thread(fetch, self.base_url + path)


@pytest.fixture
async def worker(
    amqp_url: str, mongo_url: str, unique_name: str, tcp_relay: Callable[[str], Awaitable[TcpRelay]]
) -> AsyncIterator[tuple[Worker, TcpRelay]]:
    broker = urlsplit(amqp_url)
    relay = await tcp_relay(f"{broker.hostname}:{broker.port or 5672}")
    relayed = broker._replace(netloc=f"{broker.username}:{broker.password}@127.0.0.1:{relay.port}").geturl()
    bus = EventBus(f"{relayed}?reconnect_interval=0.3", f"{unique_name}.events", unique_name, "probe-test")
    heartbeat = LoopHeartbeat(interval_seconds=0.05)
    beating = asyncio.create_task(heartbeat.run())
    probes = WorkerProbes(heartbeat, MAX_STALL, MAX_HOLD)
    server = MetricsServer("127.0.0.1", free_port(), probes.endpoints()).start()
    database = mongo.connect(mongo_url, unique_name)
    state = Worker(bus, probes, f"http://{server.address}", [], asyncio.Event(), asyncio.Event())

    async def handler(envelope: events_pb2.Envelope) -> None:
        state.holding.set()
        await state.release.wait()
        state.handled.append(envelope.event_id)

    try:
        await bus.connect()
        await bus.consume(
            "worker", ["image.uploaded"], handler, ProcessedEvents(database["processed"], "worker"), prefetch=1
        )
        probes.add("restore", bus)
        yield state, relay
    finally:
        state.release.set()
        await bus.close()
        beating.cancel()
        server.close()
        connection = await aio_pika.connect(amqp_url)
        async with connection:
            channel = await connection.channel()
            for queue in bus.consumer_queues("worker"):
                await channel.queue_delete(queue)
            await channel.exchange_delete(f"{unique_name}.events")
            await channel.exchange_delete(bus.dead_letter_exchange)
        await database.client.drop_database(unique_name)
        database.client.close()


async def test_not_ready_until_started_then_ready_and_live(worker: tuple[Worker, TcpRelay]) -> None:
    state, _ = worker
    status, body = await state.get("/readyz")
    assert status == 503 and body["checks"]["models_loaded"] is False
    # While the models load, the startup probe is in charge: liveness does not fail.
    assert (await state.get("/healthz"))[0] == 200

    state.probes.started()

    status, body = await state.get("/readyz")
    assert status == 200, body
    assert body["checks"] == {"models_loaded": True, "broker_connected": True, "consuming": True}
    status, body = await state.get("/healthz")
    assert status == 200, body
    # The same server still serves the metrics.
    metrics = await asyncio.to_thread(lambda: urllib.request.urlopen(state.base_url + "/metrics", timeout=5).read())
    assert b"events_consumed_total" in metrics


async def test_liveness_fails_while_the_event_loop_is_blocked_and_recovers(worker: tuple[Worker, TcpRelay]) -> None:
    state, _ = worker
    state.probes.started()
    assert (await state.get("/healthz"))[0] == 200

    loop = asyncio.get_running_loop()
    answer = loop.run_in_executor(None, lambda: (time.sleep(MAX_STALL * 2), fetch(state.base_url + "/healthz"))[1])
    time.sleep(MAX_STALL * 4)  # noqa: ASYNC251 - blocking the loop is the point: a stuck worker
    status, body = await answer

    assert status == 503, body
    assert body["checks"]["event_loop"] is False and body["loop_stall_seconds"] > MAX_STALL
    await asyncio.sleep(0.2)
    assert (await state.get("/healthz"))[0] == 200


async def test_liveness_fails_while_a_message_is_held_past_the_limit_and_recovers(
    worker: tuple[Worker, TcpRelay],
) -> None:
    state, _ = worker
    state.probes.started()
    envelope = new_envelope("probe-test", image_uploaded=events_pb2.ImageUploaded(image_id="held"))
    await state.bus.publish(envelope)
    await asyncio.wait_for(state.holding.wait(), 10)
    assert (await state.get("/healthz"))[0] == 200

    await asyncio.sleep(MAX_HOLD + 0.3)  # the loop turns; only the message is stuck
    status, body = await state.get("/healthz")
    assert status == 503, body
    assert body["checks"] == {"event_loop": True, "messages_held": False, "consumer_channels": True}

    state.release.set()
    deadline = time.monotonic() + 10
    while state.handled != [envelope.event_id]:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.1)
    assert (await state.get("/healthz"))[0] == 200


async def test_not_ready_while_the_broker_is_unreachable_but_still_live(worker: tuple[Worker, TcpRelay]) -> None:
    state, relay = worker
    state.probes.started()
    assert (await state.get("/readyz"))[0] == 200

    await relay.cut()
    deadline = time.monotonic() + 10
    while (await state.get("/readyz"))[0] != 503:
        assert time.monotonic() < deadline, "readiness did not notice the broker was gone"
        await asyncio.sleep(0.1)
    _, body = await state.get("/readyz")
    assert body["checks"]["broker_connected"] is False
    # Restarting the worker would not bring the broker back: liveness stays ok.
    assert (await state.get("/healthz"))[0] == 200

    await relay.restore()
    deadline = time.monotonic() + 20
    while (await state.get("/readyz"))[0] != 200:
        assert time.monotonic() < deadline, "readiness did not come back with the broker"
        await asyncio.sleep(0.2)
