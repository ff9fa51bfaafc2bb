"""Fixtures every test folder can use: real servers on free ports.

The MongoDB stand-in (nx-27017) and the S3 stand-in (localbucket) are started per test
session; RabbitMQ and Redis are the machine's own (make test makes sure they answer)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

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
