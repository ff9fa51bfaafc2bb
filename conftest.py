"""Fixtures every test folder can use: real servers on free ports.

The MongoDB stand-in (nx-27017) and the S3 stand-in (localbucket) are started per test
session; RabbitMQ and Redis are the machine's own (make test makes sure they answer)."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from facerestore_common.library_generation import LibraryGenerations

BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing answered on port {port}")


def _serve(argv: list[str], port: int) -> Iterator[None]:
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_port(port, process)
        yield
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def mongo_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data = tmp_path_factory.mktemp("mongo")
    port = _free_port()
    argv = [
        str(BIN / "nx-27017"),
        "--data-dir",
        str(data),
        "--pid-file",
        str(data / "nx.pid"),
        "--host",
        "127.0.0.1",
        "-p",
        str(port),
    ]
    yield from (f"mongodb://127.0.0.1:{port}" for _ in _serve(argv, port))


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data = tmp_path_factory.mktemp("s3")
    port = _free_port()
    argv = [str(BIN / "localbucket"), str(data), "--host", "127.0.0.1", "--port", str(port)]
    yield from (f"127.0.0.1:{port}" for _ in _serve(argv, port))


@pytest.fixture
def unique_name() -> str:
    """A fresh name for databases, queues and key prefixes, so tests never share state."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def amqp_url() -> str:
    return os.environ.get("TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


@pytest.fixture(scope="session")
def redis_url() -> str:
    return os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
async def redis(redis_url: str, unique_name: str) -> AsyncIterator[Redis]:
    """A client of the machine's Redis; the keys under the test's unique name go afterwards."""
    client = Redis.from_url(redis_url)
    yield client
    keys = [key async for key in client.scan_iter(match=f"{unique_name}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


@pytest.fixture
def generations(redis: Redis, unique_name: str) -> LibraryGenerations:
    """The users' library generations, under the test's own key prefix."""
    return LibraryGenerations(redis, unique_name)


class TcpRelay:
    """Forwards a local port to a real server. cut() drops every connection through it and
    refuses new ones, as a network partition or a stopped server would, without touching the
    server that other tests share; restore() accepts again on the same port."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self.port = _free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _relay(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection(*self._target)
        except OSError:
            client_writer.close()
            return
        self._writers.update((client_writer, server_writer))
        await asyncio.gather(self._pipe(client_reader, server_writer), self._pipe(server_reader, client_writer))
        self._writers.difference_update((client_writer, server_writer))

    async def restore(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port, reuse_address=True)

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()


@pytest.fixture
async def tcp_relay() -> AsyncIterator[Callable[[str], Awaitable[TcpRelay]]]:
    """tcp_relay("host:port") -> a started TcpRelay to that server."""
    relays: list[TcpRelay] = []

    async def start(address: str) -> TcpRelay:
        host, port = address.rsplit(":", 1)
        relay = TcpRelay(host, int(port))
        await relay.restore()
        relays.append(relay)
        return relay

    yield start
    for relay in relays:
        await relay.cut()
