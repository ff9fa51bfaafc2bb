"""Every service of the running stack serves Prometheus metrics on a port of its own, and after
one real upload each shows the series that describe its part: the gateway's RED metrics by
route template, every gRPC service's handled calls, the events published and consumed, and the
worker's restorations; the worker's probes answer on the same port."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import face_photo
from tests.e2e.test_walkthrough import bearer, upload, wait_until_settled
from tests.stack_harness import RunningStack, random_mobile

Samples = list[tuple[str, dict[str, str], float]]


def scrape(stack: RunningStack, service: str) -> Samples:
    response = httpx.get(f"http://127.0.0.1:{stack.ports[f'{service.upper()}_METRICS']}/metrics", timeout=10)
    assert response.status_code == 200, response.text
    return [
        (sample.name, sample.labels, sample.value)
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    ]


def total(samples: Samples, name: str, **labels: str) -> float:
    return sum(
        value
        for sample_name, sample_labels, value in samples
        if sample_name == name and all(sample_labels.get(key, "").startswith(want) for key, want in labels.items())
    )


def test_every_service_serves_its_own_metrics_on_its_own_port(stack: RunningStack, client: httpx.Client) -> None:
    tokens = stack.sign_in(client, random_mobile())
    response = upload(client, tokens, face_photo("t1.jpg").read_bytes())
    assert response.status_code == 202, response.text
    image_id = response.json()["id"]
    assert wait_until_settled(client, tokens, image_id)["status"] == "done"
    admin = stack.sign_in(client, stack.admin_sign_in_phone())
    assert client.get("/v1/admin/stats", headers=bearer(admin)).status_code == 200

    gateway = scrape(stack, "gateway")
    assert total(gateway, "gateway_http_requests_total", method="POST", route="/v1/images", status="202") >= 1
    assert total(gateway, "gateway_http_requests_total", method="GET", route="/v1/images/{image_id}") >= 1
    assert total(gateway, "gateway_http_request_duration_seconds_count", route="/v1/auth/otp/verify") >= 2
    assert not [labels for _, labels, _ in gateway if image_id in labels.get("route", "")]

    for service, api in (
        ("auth", "AuthService"),
        ("upload", "UploadService"),
        ("history", "HistoryService"),
        ("admin", "AdminService"),
    ):
        samples = scrape(stack, service)
        method = f"/facerestore.{service}.v1.{api}/"
        assert total(samples, "grpc_server_handled_total", method=method, code="OK") >= 1, service
        assert total(samples, "grpc_server_handling_seconds_count", method=method) >= 1, service

    upload_samples = scrape(stack, "upload")
    assert total(upload_samples, "events_published_total", type="image.uploaded") >= 1
    history = scrape(stack, "history")
    assert total(history, "events_consumed_total", queue=f"{stack.namespace}.history", outcome="acked") >= 2

    inference = scrape(stack, "inference")
    classical_queue = f"{stack.namespace}.inference.classical"  # the stack's workers serve classical
    assert total(inference, "events_consumed_total", queue=classical_queue, outcome="acked") >= 1
    assert total(inference, "events_published_total", type="image.restored") >= 1
    assert total(inference, "inference_results_total") >= 1
    assert total(inference, "inference_queue_lag_seconds_count") >= 1

    worker = f"http://127.0.0.1:{stack.ports['INFERENCE_METRICS']}"
    assert httpx.get(f"{worker}/healthz", timeout=10).json()["status"] == "ok"
    ready = httpx.get(f"{worker}/readyz", timeout=10).json()
    assert ready["status"] == "ok" and all(ready["checks"].values()), ready
