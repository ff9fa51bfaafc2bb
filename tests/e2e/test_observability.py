"""The running stack's metrics endpoints, after real traffic (sign-ins with a wrong code, a sign-in
limit hit, an upload, a search, the admin's statistics): every service exports the series the
platform promises (RED, gRPC server and client calls, events by outcome, outbox backlog, codes
by provider, refusals by limit, model quality), and every query of the shipped dashboards and
alert rules reads a metric that a running service really exports, or that RabbitMQ's plugin
exports (deploy/monitoring/rabbitmq-metrics.txt)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import face_photo
from tests.e2e.test_walkthrough import bearer, upload, wait_until_settled
from tests.monitoring_files import every_expression, metric_names, rabbitmq_metrics
from tests.stack_harness import RunningStack, random_mobile

SERVICES = ("gateway", "auth", "upload", "history", "admin", "inference")
Samples = list[tuple[str, dict[str, str], float]]


class Scrape:
    def __init__(self, text: str) -> None:
        families = list(text_string_to_metric_families(text))
        self.families = {family.name for family in families}
        self.samples: Samples = [(s.name, s.labels, s.value) for family in families for s in family.samples]

    def names(self) -> set[str]:
        return self.families | {name for name, _, _ in self.samples}

    def series(self, name: str, **labels: str) -> list[float]:
        return [
            value
            for sample, sample_labels, value in self.samples
            if sample == name and all(sample_labels.get(key) == want for key, want in labels.items())
        ]

    def value(self, name: str, **labels: str) -> float:
        found = self.series(name, **labels)
        assert found, f"no series {name}{labels}"
        return sum(found)


def scrape(stack: RunningStack, service: str) -> Scrape:
    response = httpx.get(f"http://127.0.0.1:{stack.ports[f'{service.upper()}_METRICS']}/metrics", timeout=10)
    assert response.status_code == 200, response.text
    return Scrape(response.text)


@pytest.fixture(scope="module")
def scraped(stack: RunningStack) -> dict[str, Any]:
    """Every service's metrics after a round of real traffic."""
    with httpx.Client(base_url=stack.base_url, timeout=30) as client:
        phone = random_mobile()
        assert client.post("/v1/auth/otp", json={"phone": phone}).status_code == 202
        code = stack.latest_code(phone)
        wrong = "000000" if code != "000000" else "111111"
        assert client.post("/v1/auth/otp/verify", json={"phone": phone, "code": wrong}).status_code == 401
        tokens = client.post("/v1/auth/otp/verify", json={"phone": phone, "code": code}).json()
        # Auth's codes-per-number limit (5 an hour): the sixth request is refused.
        limited = random_mobile()
        answers = [client.post("/v1/auth/otp", json={"phone": limited}) for _ in range(6)]
        assert [answer.status_code for answer in answers] == [202] * 5 + [429]
        limit = answers[-1].json()["limit"]

        response = upload(client, tokens, face_photo("t1.jpg").read_bytes())
        assert response.status_code == 202, response.text
        image_id = response.json()["id"]
        assert wait_until_settled(client, tokens, image_id)["status"] == "done"
        search = client.post("/v1/search", headers=bearer(tokens), json={"image_id": image_id, "face_index": 0})
        assert search.status_code == 200, search.text
        admin = stack.sign_in(client, stack.admin_sign_in_phone())
        assert client.get("/v1/admin/stats", headers=bearer(admin)).status_code == 200
    return {"limit": limit, "scrapes": {service: scrape(stack, service) for service in SERVICES}}


def test_every_service_exports_the_promised_series(stack: RunningStack, scraped: dict[str, Any]) -> None:
    gateway, auth, upload_, history, admin, inference = (scraped["scrapes"][s] for s in SERVICES)
    ns = stack.namespace

    # Gateway: RED by route template, refusals by limit, its gRPC client calls.
    assert gateway.value("gateway_http_requests_total", method="POST", route="/v1/images", status="202") >= 1
    assert gateway.value("gateway_http_request_duration_seconds_count", method="POST", route="/v1/images") >= 1
    assert gateway.value("gateway_rate_limit_refusals_total", limit=scraped["limit"]) >= 1
    assert gateway.series("gateway_rate_limit_refusals_total", limit="uploads-per-user")  # at 0 from the start
    create = "/facerestore.upload.v1.UploadService/CreateUpload"
    assert gateway.value("grpc_client_handled_total", method=create, code="OK") >= 1
    assert gateway.value("grpc_client_handling_seconds_count", method=create) >= 1
    assert gateway.value("grpc_client_handled_total", method="/facerestore.auth.v1.AuthService/RequestCode") >= 6

    # Auth: codes sent and failed by provider, verifications by result, gRPC server calls.
    assert auth.value("auth_codes_sent_total", channel="sms", provider="outbox") >= 6
    assert auth.series("auth_code_send_failures_total", channel="sms", provider="outbox") == [0.0]
    assert auth.value("auth_code_verifications_total", channel="sms", result="wrong") >= 1
    assert auth.value("auth_code_verifications_total", channel="sms", result="ok") >= 2
    assert auth.value("auth_sign_ins_total", channel="sms") >= 2
    assert auth.value("grpc_server_handled_total", method="/facerestore.auth.v1.AuthService/VerifyCode", code="OK") >= 2
    assert auth.value("events_published_total", type="activity.recorded") >= 1
    assert auth.series("outbox_backlog_events", outbox="activity")

    # Upload: the outbox backlog, image.uploaded published, its server and client calls.
    assert upload_.series("outbox_backlog_events", outbox="image.uploaded")
    assert upload_.series("outbox_oldest_event_age_seconds", outbox="image.uploaded")
    assert upload_.value("events_published_total", type="image.uploaded") >= 1
    assert upload_.value("grpc_server_handled_total", method=create, code="OK") >= 1
    assert upload_.value("grpc_client_handled_total", method="/facerestore.auth.v1.AuthService/GetJwks") >= 1

    # Consumers: every outcome's series, acked ones counted, handling time.
    # The stack's worker serves the classical restorer: it consumes that model's queue.
    for consumer, scrape_ in (("history", history), ("admin", admin), ("inference.classical", inference)):
        queue = f"{ns}.{consumer}"
        assert scrape_.value("events_consumed_total", queue=queue, outcome="acked") >= 1, consumer
        for outcome in ("retried", "dead_lettered", "duplicate"):
            assert scrape_.series("events_consumed_total", queue=queue, outcome=outcome), (consumer, outcome)
        assert scrape_.value("events_handling_seconds_count", queue=queue) >= 1, consumer
    assert history.value("events_published_total", type="activity.recorded") >= 1  # the search
    assert admin.value("grpc_client_handled_total", method="/facerestore.auth.v1.AuthService/CountUsers") >= 1
    assert admin.value("grpc_server_handled_total", method="/facerestore.admin.v1.AdminService/GetStats") >= 1

    # The worker: outcomes, time, and the quality of what it restored.
    assert inference.value("inference_results_total", outcome="done") >= 1
    assert inference.value("inference_identity_similarity_count") >= 1
    assert inference.value("inference_sharpness_gain_count") >= 1
    assert inference.value("inference_queue_lag_seconds_count") >= 1


def test_every_dashboard_and_alert_query_reads_an_exported_metric(scraped: dict[str, Any]) -> None:
    exported: set[str] = set()
    for scrape_ in scraped["scrapes"].values():
        exported |= scrape_.names()
    plugin = rabbitmq_metrics()
    missing = sorted(
        (where, name)
        for where, expr in every_expression()
        for name in metric_names(expr)
        if name not in exported and name not in plugin
    )
    assert missing == []
    assert "made_up_metric_total" not in exported  # the check can fail
