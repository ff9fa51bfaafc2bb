"""The standard gRPC health status follows the service's dependencies, on real servers: a
private MongoDB stand-in that the test stops and starts again, and the machine's RabbitMQ and
Redis reached through a relay that the test cuts (they are shared, so they are never stopped)."""

from __future__ import annotations

import asyncio
import functools
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import aio_pika
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from redis.asyncio import Redis

from facerestore_common import mongo
from facerestore_common.events import EventBus
from facerestore_common.grpc_client import insecure_channel
from facerestore_common.grpc_server import GrpcServer
from facerestore_common.health import DependencyCheck, redis_check

if TYPE_CHECKING:
    from conftest import TcpRelay

SERVICE = "facerestore.test.v1.Probed"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class MongoStandIn:
    """nx-27017 on a fixed port and data folder, stopped and started by the test."""

    def __init__(self, data: Path) -> None:
        self.data = data
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}"

    def start(self) -> None:
        argv = [str(BIN / "nx-27017"), "--data-dir", str(self.data), "--host", "127.0.0.1", "-p", str(self.port)]
        argv += ["--pid-file", str(self.data / "nx.pid")]
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            assert self.process.poll() is None, "nx-27017 exited"
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                assert time.monotonic() < deadline, "nx-27017 did not open its port"
                time.sleep(0.1)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None


@pytest.fixture
def private_mongo(tmp_path: Path) -> Iterator[MongoStandIn]:
    stand_in = MongoStandIn(tmp_path)
    stand_in.start()
    yield stand_in
    stand_in.stop()


Serve = Callable[[Mapping[str, DependencyCheck]], Awaitable[grpc.aio.Channel]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """serve(checks) -> a channel to a started GrpcServer whose health follows those checks."""
    started: list[tuple[GrpcServer, grpc.aio.Channel]] = []

    async def start(checks: Mapping[str, DependencyCheck]) -> grpc.aio.Channel:
        server = GrpcServer(
            [SERVICE],
            "127.0.0.1",
            free_port(),
            1024 * 1024,
            [],
            checks=checks,
            check_interval_seconds=0.2,
            check_timeout_seconds=1.0,
        )
        await server.start()
        channel = insecure_channel(server.address)
        started.append((server, channel))
        return channel

    yield start
    for server, channel in started:
        await channel.close()
        await server.stop(0)


async def statuses(channel: grpc.aio.Channel) -> tuple[int, int]:
    """The status of the server as a whole and of its service."""
    stub = health_pb2_grpc.HealthStub(channel)
    whole = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
    service = await stub.Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=5)
    return whole.status, service.status


async def wait_for(channel: grpc.aio.Channel, status: int, within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while await statuses(channel) != (status, status):
        assert time.monotonic() < deadline, f"health did not turn {status} within {within}s"
        await asyncio.sleep(0.1)


async def test_not_serving_while_mongodb_is_down_and_serving_once_it_is_back(
    private_mongo: MongoStandIn, serve: Serve
) -> None:
    database = mongo.connect(private_mongo.url, "health")
    try:
        channel = await serve({"mongodb": functools.partial(mongo.ping, database)})
        assert await statuses(channel) == (SERVING, SERVING)

        private_mongo.stop()
        await wait_for(channel, NOT_SERVING)
        # Still down: it stays NOT_SERVING, it does not flap.
        await asyncio.sleep(1)
        assert await statuses(channel) == (NOT_SERVING, NOT_SERVING)

        private_mongo.start()
        await wait_for(channel, SERVING)
    finally:
        database.client.close()


async def test_a_server_that_starts_without_its_dependency_starts_not_serving(serve: Serve) -> None:
    database = mongo.connect(f"mongodb://127.0.0.1:{free_port()}", "health")
    try:
        channel = await serve({"mongodb": functools.partial(mongo.ping, database)})
        assert await statuses(channel) == (NOT_SERVING, NOT_SERVING)
    finally:
        database.client.close()


async def test_not_serving_while_the_broker_is_unreachable_and_serving_once_it_is_back(
    amqp_url: str, unique_name: str, serve: Serve, tcp_relay: Callable[[str], Awaitable[TcpRelay]]
) -> None:
    broker = urlsplit(amqp_url)
    relay = await tcp_relay(f"{broker.hostname}:{broker.port or 5672}")
    relayed = broker._replace(netloc=f"{broker.username}:{broker.password}@127.0.0.1:{relay.port}")
    bus = EventBus(f"{relayed.geturl()}?reconnect_interval=0.3", f"{unique_name}.events", unique_name, "health-test")
    await bus.connect()
    try:
        channel = await serve({"broker": bus.ping})
        assert await statuses(channel) == (SERVING, SERVING)

        await relay.cut()
        await wait_for(channel, NOT_SERVING)

        await relay.restore()
        await wait_for(channel, SERVING)
    finally:
        await bus.close()
        connection = await aio_pika.connect(amqp_url)
        async with connection:
            cleanup = await connection.channel()
            await cleanup.exchange_delete(f"{unique_name}.events")
            await cleanup.exchange_delete(bus.dead_letter_exchange)


async def test_not_serving_while_redis_is_unreachable_and_serving_once_it_is_back(
    redis_url: str, serve: Serve, tcp_relay: Callable[[str], Awaitable[TcpRelay]]
) -> None:
    target = urlsplit(redis_url)
    relay = await tcp_relay(f"{target.hostname}:{target.port or 6379}")
    redis = Redis.from_url(target._replace(netloc=f"127.0.0.1:{relay.port}").geturl(), socket_timeout=1)
    try:
        channel = await serve({"redis": redis_check(redis)})
        assert await statuses(channel) == (SERVING, SERVING)

        await relay.cut()
        await wait_for(channel, NOT_SERVING)

        await relay.restore()
        await wait_for(channel, SERVING)
    finally:
        await redis.aclose()
