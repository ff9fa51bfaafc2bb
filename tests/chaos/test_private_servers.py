"""The chaos rig's private Redis and RabbitMQ: a port taken between picking it and binding it
must not leave the services talking to whatever else listens there (a short chaos run once
failed so: redis exited on `bind: Address already in use`, the port check passed on the other
listener, and auth timed out reading from it)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import aio_pika
import pytest
import redis

from benchmarks.load.servers import PrivateRabbitMQ, PrivateRedis


@contextlib.contextmanager
def listening_on(port: int) -> Iterator[None]:
    """Another program's listener on `port`, as if it took the port first."""
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        yield


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    yield server
    server.stop()


def test_a_port_taken_before_the_first_start_moves_redis_to_another_port(private_redis: PrivateRedis) -> None:
    picked = private_redis.port
    with listening_on(picked):
        private_redis.start()

        assert private_redis.port != picked
        client = redis.Redis(port=private_redis.port, socket_timeout=5)
        assert client.set("chaos-probe", "1") and client.get("chaos-probe") == b"1"


def test_a_restart_keeps_the_port_the_services_were_given(private_redis: PrivateRedis) -> None:
    private_redis.start()
    port = private_redis.port
    private_redis.stop()
    private_redis.start()

    assert private_redis.port == port
    assert redis.Redis(port=port, socket_timeout=5).ping()


def test_a_restart_whose_port_was_taken_fails_instead_of_moving(private_redis: PrivateRedis) -> None:
    private_redis.start()
    port = private_redis.port
    private_redis.stop()
    with listening_on(port):
        with pytest.raises(RuntimeError, match=f"port {port}"):
            private_redis.start()
    assert private_redis.port == port


def test_a_port_taken_before_the_first_start_moves_rabbitmq_to_other_ports(tmp_path: Path) -> None:
    node = PrivateRabbitMQ(tmp_path, f"ports-{uuid.uuid4().hex[:8]}")
    picked = node.port
    try:
        with listening_on(picked):
            node.start()

            assert node.port != picked
            assert asyncio.run(declares_a_queue(node.url))
    finally:
        node.stop()


async def declares_a_queue(url: str) -> bool:
    async with await aio_pika.connect(url, timeout=10) as connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(exclusive=True)
        return bool(queue.name)
