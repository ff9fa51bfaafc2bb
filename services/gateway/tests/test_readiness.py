"""/readyz is about the gateway's own dependency: it is ready while Redis answers, whatever
the backend services say, and reports their gRPC health in the body; a report is reused for
READYZ_CACHE_SECONDS. A real gRPC server plays the auth service (its health set by the test),
the other services are ports where nothing listens, and Redis is the machine's own, reached
through a relay the test can cut."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import httpx
import pytest
from grpc_health.v1 import health_pb2

from facerestore_common.grpc_server import GrpcServer
from gateway_service.app import create_app
from gateway_service.settings import Settings

if TYPE_CHECKING:
    from conftest import TcpRelay


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def auth_server() -> AsyncIterator[GrpcServer]:
    server = GrpcServer(["facerestore.auth.v1.AuthService"], "127.0.0.1", free_port(), 1024 * 1024, [])
    await server.start()
    yield server
    await server.stop(0)


@asynccontextmanager
async def gateway(redis_url: str, auth_target: str, cache_seconds: float) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        auth_grpc_target=auth_target,
        upload_grpc_target=f"127.0.0.1:{free_port()}",
        history_grpc_target=f"127.0.0.1:{free_port()}",
        admin_grpc_target=f"127.0.0.1:{free_port()}",
        redis_url=redis_url,
        readyz_cache_seconds=cache_seconds,
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as http:
            yield http


async def test_ready_while_redis_answers_with_backends_down_and_their_health_in_the_body(
    redis_url: str, auth_server: GrpcServer
) -> None:
    async with gateway(redis_url, auth_server.address, cache_seconds=0) as client:
        response = await client.get("/readyz")
        assert response.status_code == 200, response.text
        report = response.json()
        assert datetime.fromisoformat(report.pop("checked_at")) <= datetime.now(UTC)
        assert report == {
            "status": "ready",
            "checks": {"redis": True},
            "backends": {"auth": "serving", "upload": "unreachable", "history": "unreachable", "admin": "unreachable"},
        }

        await auth_server.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        response = await client.get("/readyz")
        assert response.status_code == 200, response.text
        assert response.json()["backends"]["auth"] == "not-serving"


async def test_not_ready_while_redis_is_unreachable_and_a_report_is_reused_for_the_cache_time(
    redis_url: str, auth_server: GrpcServer, tcp_relay: Callable[[str], Awaitable[TcpRelay]]
) -> None:
    target = urlsplit(redis_url)
    relay = await tcp_relay(f"{target.hostname}:{target.port or 6379}")
    relayed = target._replace(netloc=f"127.0.0.1:{relay.port}").geturl()
    async with gateway(relayed, auth_server.address, cache_seconds=1.0) as client:
        assert (await client.get("/readyz")).status_code == 200
        await relay.cut()
        # Within the cache time the last report stands.
        assert (await client.get("/readyz")).status_code == 200

        await asyncio.sleep(1.1)
        response = await client.get("/readyz")
        assert response.status_code == 503
        assert response.json()["status"] == "not-ready" and response.json()["checks"] == {"redis": False}
        # A backend's health does not make it ready either.
        assert response.json()["backends"]["auth"] == "serving"

        await relay.restore()
        await asyncio.sleep(1.1)
        assert (await client.get("/readyz")).status_code == 200
