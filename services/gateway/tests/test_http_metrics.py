"""The gateway's RED metrics through the real app: one series per route template, method and
status, whatever ids the paths carry; paths that match no route share one label; responses
given before routing (a body over the limit) still count under the route they were for."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import httpx
import pytest
from prometheus_client import REGISTRY

from gateway_service.app import create_app
from gateway_service.settings import Settings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        auth_grpc_target=f"127.0.0.1:{free_port()}",
        upload_grpc_target=f"127.0.0.1:{free_port()}",
        history_grpc_target=f"127.0.0.1:{free_port()}",
        admin_grpc_target=f"127.0.0.1:{free_port()}",
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as http:
            yield http


def requests_total(method: str, route: str, status: str) -> float:
    labels = {"method": method, "route": route, "status": status}
    return REGISTRY.get_sample_value("gateway_http_requests_total", labels) or 0.0


def durations_observed(method: str, route: str) -> float:
    labels = {"method": method, "route": route}
    return REGISTRY.get_sample_value("gateway_http_request_duration_seconds_count", labels) or 0.0


def routes_with_label_containing(text: str) -> list[str]:
    return [
        sample.labels["route"]
        for metric in REGISTRY.collect()
        if metric.name == "gateway_http_requests"
        for sample in metric.samples
        if text in sample.labels.get("route", "")
    ]


async def test_requests_are_counted_under_their_route_template_not_their_path(client: httpx.AsyncClient) -> None:
    template = "/v1/images/{image_id}"
    before, observed_before = requests_total("GET", template, "401"), durations_observed("GET", template)

    for image_id in ("metrics-id-1", "metrics-id-2", "metrics-id-3"):
        assert (await client.get(f"/v1/images/{image_id}")).status_code == 401

    assert requests_total("GET", template, "401") == before + 3
    assert durations_observed("GET", template) == observed_before + 3
    assert routes_with_label_containing("metrics-id-") == []


async def test_paths_that_match_no_route_share_one_label(client: httpx.AsyncClient) -> None:
    before = requests_total("GET", "unmatched", "404")

    for n in range(4):
        assert (await client.get(f"/no-such-page-{n}")).status_code == 404

    assert requests_total("GET", "unmatched", "404") == before + 4
    assert routes_with_label_containing("no-such-page") == []


async def test_a_body_refused_before_routing_counts_under_the_route_it_was_for(client: httpx.AsyncClient) -> None:
    before = requests_total("POST", "/v1/images", "413")

    response = await client.post(
        "/v1/images", content=b"x" * 10, headers={"content-length": str(50 * 1024 * 1024), "content-type": "image/png"}
    )

    assert response.status_code == 413
    assert requests_total("POST", "/v1/images", "413") == before + 1
