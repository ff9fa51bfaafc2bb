"""Start-up against a Qdrant server that is not there yet, or not ready: history waits for it
within the start-up deadline, as for its other servers, and gives up naming its address, never
its API key. A refused key is not waited out. (No Qdrant server can run here: the servers below
are plain HTTP servers on real sockets, answering as a starting server or a wrong key would.)"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Callable, MutableMapping
from typing import Any

import pytest
from pydantic import SecretStr
from qdrant_client.http.exceptions import UnexpectedResponse
from structlog.testing import capture_logs

from facerestore_common.startup_wait import DependencyUnavailableError, StartupDeadline
from history_service.face_index.factory import open_face_index, qdrant_address
from history_service.settings import Settings

SECRET = "qdrant-api-key-that-must-not-be-logged"
SAFETY_SECONDS = 30

# An API key over http warns, and so does the client's version check against these servers.
pytestmark = [
    pytest.mark.filterwarnings("ignore:Api key is used with an insecure connection:UserWarning"),
    pytest.mark.filterwarnings("ignore:Failed to obtain server version:UserWarning"),
]


def events(logs: list[MutableMapping[str, Any]], name: str) -> list[MutableMapping[str, Any]]:
    return [entry for entry in logs if entry["event"] == name]


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
async def http_server() -> AsyncIterator[Callable[[int], Any]]:
    """http_server(status) -> the port of a server answering every request with that status."""
    servers: list[asyncio.Server] = []

    async def start(status: int) -> int:
        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            body = json.dumps({"status": {"error": "not now"}}).encode()
            head = f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            writer.write(head.encode() + b"connection: close\r\n\r\n" + body)
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


async def test_a_qdrant_server_that_never_answers_is_given_up_at_the_deadline_naming_it_not_its_key() -> None:
    port = closed_port()
    settings = Settings(qdrant_url=f"http://127.0.0.1:{port}", qdrant_api_key=SecretStr(SECRET))
    with capture_logs() as logs, pytest.raises(DependencyUnavailableError) as raised:
        await asyncio.wait_for(open_face_index(settings, deadline=StartupDeadline(1)), SAFETY_SECONDS)
    assert f"the qdrant at 127.0.0.1:{port} did not answer within the 1 s start-up wait" in str(raised.value)
    assert len(events(logs, "startup_dependency_unavailable")) >= 1
    assert SECRET not in str(raised.value)
    assert SECRET not in json.dumps(logs, default=str)


async def test_a_starting_qdrant_server_is_waited_for_and_a_refused_key_is_not(
    http_server: Callable[[int], Any],
) -> None:
    starting = await http_server(503)
    settings = Settings(qdrant_url=f"http://127.0.0.1:{starting}", qdrant_api_key=SecretStr(SECRET))
    with capture_logs() as logs, pytest.raises(DependencyUnavailableError):
        await asyncio.wait_for(open_face_index(settings, deadline=StartupDeadline(1)), SAFETY_SECONDS)
    assert "HTTP 503" in events(logs, "startup_dependency_unavailable")[0]["error"]

    refusing = await http_server(403)
    settings = Settings(qdrant_url=f"http://127.0.0.1:{refusing}", qdrant_api_key=SecretStr(SECRET))
    with capture_logs() as logs, pytest.raises(UnexpectedResponse):
        await asyncio.wait_for(open_face_index(settings, deadline=StartupDeadline(60)), SAFETY_SECONDS)
    assert events(logs, "startup_dependency_unavailable") == []


def test_the_logged_address_is_host_and_port_without_credentials() -> None:
    assert qdrant_address("https://user:pw@qdrant.internal:6334") == "qdrant.internal:6334"
    assert qdrant_address("http://qdrant") == "qdrant:6333"
    assert qdrant_address("http://[::1]:6333") == "[::1]:6333"
