"""The gateway's one error shape (RFC 9457 problem details) and its probes, through the real
FastAPI app with its lifespan run, every service and Redis pointed at ports where nothing listens."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import grpc
import httpx
import pytest

from gateway_service import problems
from gateway_service.app import create_app
from gateway_service.settings import Settings

PROBLEM_TYPE = "application/problem+json"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def settings() -> Settings:
    return Settings(
        auth_grpc_target=f"127.0.0.1:{free_port()}",
        upload_grpc_target=f"127.0.0.1:{free_port()}",
        history_grpc_target=f"127.0.0.1:{free_port()}",
        admin_grpc_target=f"127.0.0.1:{free_port()}",
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
        grpc_deadline_seconds=3.0,
    )


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as http:
            yield http


def assert_problem(response: httpx.Response, status: int, reason: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_TYPE
    body: dict[str, object] = response.json()
    assert body["type"] == problems.PROBLEM_BASE + reason
    assert str(body["type"]).endswith("/" + reason)
    assert body["status"] == status
    assert body["instance"] == response.request.url.path
    assert body["request_id"]
    assert body["request_id"] == response.headers["x-request-id"]
    return body


# --- through the app -----------------------------------------------------------------------------


async def test_unknown_path_is_a_not_found_problem_carrying_the_request_id(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/no-such-thing")

    body = assert_problem(response, 404, "not-found")
    assert body["title"] == "Not Found"


async def test_wrong_method_is_a_method_not_allowed_problem(client: httpx.AsyncClient) -> None:
    response = await client.delete("/healthz")

    assert_problem(response, 405, "method-not-allowed")


async def test_me_without_a_token_is_401_with_a_bearer_challenge(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/me")

    body = assert_problem(response, 401, "unauthenticated")
    assert response.headers["www-authenticate"] == "Bearer"
    assert body["title"] == "Unauthorized"


async def test_me_with_another_auth_scheme_is_401(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/me", headers={"Authorization": "Basic dXNlcjpwYXNz"})

    assert_problem(response, 401, "unauthenticated")
    assert response.headers["www-authenticate"] == "Bearer"


async def test_malformed_json_body_is_a_validation_problem(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/auth/otp", content=b'{"phone": "+1415', headers={"Content-Type": "application/json"}
    )

    body = assert_problem(response, 422, "validation-error")
    assert body["errors"]
    assert all({"loc", "msg"} <= set(error) for error in body["errors"])  # type: ignore[union-attr]


async def test_body_failing_the_schema_names_the_field(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/auth/otp", json={"phone": "1"})

    body = assert_problem(response, 422, "validation-error")
    assert ["body", "phone"] in [error["loc"] for error in body["errors"]]  # type: ignore[union-attr,index]


async def test_a_service_that_is_down_is_a_503_problem_without_internal_detail(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    response = await client.post("/v1/auth/otp", json={"phone": "+14155550123"})

    body = assert_problem(response, 503, "service-unavailable")
    assert body["detail"] == "a service is unavailable; try again shortly"
    port = settings.auth_grpc_target.rsplit(":", 1)[1]
    assert port not in response.text
    assert "127.0.0.1" not in response.text


async def test_healthz_is_ok_without_any_service(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_is_503_without_redis_and_reports_every_unreachable_backend(client: httpx.AsyncClient) -> None:
    response = await client.get("/readyz")

    assert response.status_code == 503
    report = response.json()
    assert report.pop("checked_at")
    assert report == {
        "status": "not-ready",
        "checks": {"redis": False},
        "backends": {"auth": "unreachable", "upload": "unreachable", "history": "unreachable", "admin": "unreachable"},
    }


async def test_an_incoming_request_id_is_echoed_and_used_in_problems(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/no-such-thing", headers={"X-Request-ID": "req-from-client-123"})

    assert response.headers["x-request-id"] == "req-from-client-123"
    assert response.json()["request_id"] == "req-from-client-123"
    ok = await client.get("/healthz", headers={"X-Request-ID": "req-from-client-456"})
    assert ok.headers["x-request-id"] == "req-from-client-456"


async def test_an_unusable_request_id_is_replaced_with_a_fresh_one(client: httpx.AsyncClient) -> None:
    too_long = "x" * 129
    first = await client.get("/healthz", headers={"X-Request-ID": too_long})
    second = await client.get("/healthz")

    assert first.headers["x-request-id"] not in ("", too_long)
    assert second.headers["x-request-id"]
    assert first.headers["x-request-id"] != second.headers["x-request-id"]


async def test_an_unexpected_error_is_a_generic_500_problem_that_still_carries_the_request_id(
    settings: Settings,
) -> None:
    app = create_app(settings)

    async def broken() -> None:
        raise RuntimeError("KeyError at /app/gateway_service/routes/images.py:42")

    app.add_api_route("/v1/broken", broken)
    async with app.router.lifespan_context(app):
        # The server (not the client) sees the exception; the client gets the response.
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as http:
            response = await http.get("/v1/broken", headers={"X-Request-ID": "req-broken-1"})

    body = assert_problem(response, 500, "internal")
    assert body["detail"] == "something went wrong on our side"
    assert response.headers["x-request-id"] == "req-broken-1"
    assert "KeyError" not in response.text


# --- from_rpc_error ------------------------------------------------------------------------------


def rpc_error(code: grpc.StatusCode, details: str, reason: str | None = None) -> grpc.aio.AioRpcError:
    trailing = grpc.aio.Metadata(("x-error-reason", reason)) if reason else grpc.aio.Metadata()
    return grpc.aio.AioRpcError(code, initial_metadata=grpc.aio.Metadata(), trailing_metadata=trailing, details=details)


def test_a_dependency_outage_keeps_its_reason_and_retry_after() -> None:
    trailing = grpc.aio.Metadata(("x-error-reason", "database-unavailable"), ("x-retry-after", "2"))
    error = grpc.aio.AioRpcError(
        grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), trailing, details="the upload could not be registered"
    )

    problem = problems.from_rpc_error(error)

    assert (problem.status, problem.reason, problem.headers["Retry-After"]) == (503, "database-unavailable", "2")
    assert problem.extra["retry_after"] == 2


def test_unsupported_media_type_reason_maps_to_415() -> None:
    problem = problems.from_rpc_error(
        rpc_error(grpc.StatusCode.INVALID_ARGUMENT, "only JPEG, PNG and WebP", "unsupported-media-type")
    )

    assert (problem.status, problem.reason, problem.detail) == (
        415,
        "unsupported-media-type",
        "only JPEG, PNG and WebP",
    )


def test_payload_too_large_reason_maps_to_413() -> None:
    problem = problems.from_rpc_error(rpc_error(grpc.StatusCode.OUT_OF_RANGE, "over 1 MiB", "payload-too-large"))

    assert (problem.status, problem.reason, problem.detail) == (413, "payload-too-large", "over 1 MiB")


def test_rate_limited_reason_maps_to_429() -> None:
    problem = problems.from_rpc_error(rpc_error(grpc.StatusCode.RESOURCE_EXHAUSTED, "slow down", "rate-limited"))

    assert (problem.status, problem.reason) == (429, "rate-limited")


def test_not_found_maps_to_404_with_the_services_detail() -> None:
    problem = problems.from_rpc_error(rpc_error(grpc.StatusCode.NOT_FOUND, "no such image", "not-found"))

    assert (problem.status, problem.reason, problem.detail) == (404, "not-found", "no such image")


def test_a_code_without_a_reason_names_the_problem_after_the_code() -> None:
    problem = problems.from_rpc_error(rpc_error(grpc.StatusCode.PERMISSION_DENIED, "admins only"))

    assert (problem.status, problem.reason) == (403, "permission-denied")


def test_unauthenticated_maps_to_401() -> None:
    problem = problems.from_rpc_error(rpc_error(grpc.StatusCode.UNAUTHENTICATED, "expired", "token-expired"))

    assert (problem.status, problem.reason) == (401, "token-expired")


def test_unavailable_maps_to_503_without_leaking_internal_detail() -> None:
    internal = "failed to connect to all addresses; last error: UNKNOWN: ipv4:10.0.3.7:50053: Connection refused"
    problem = problems.from_rpc_error(rpc_error(grpc.StatusCode.UNAVAILABLE, internal))

    assert problem.status == 503
    assert problem.reason == "service-unavailable"
    assert "10.0.3.7" not in problem.detail
    assert "50053" not in problem.detail
    assert problem.detail == "a service is unavailable; try again shortly"


def test_deadline_exceeded_maps_to_503() -> None:
    problem = problems.from_rpc_error(rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded"))

    assert problem.status == 503
    assert "Deadline" not in problem.detail


def test_internal_maps_to_500_with_a_generic_detail() -> None:
    internal = "Traceback (most recent call last): KeyError: 'mongo_url' at /app/history_service/items.py:88"
    problem = problems.from_rpc_error(rpc_error(grpc.StatusCode.INTERNAL, internal, "internal"))

    assert (problem.status, problem.reason) == (500, "internal")
    assert problem.detail == "something went wrong on our side"
    assert "Traceback" not in problem.detail


def test_an_unmapped_code_is_a_500() -> None:
    problem = problems.from_rpc_error(rpc_error(grpc.StatusCode.DATA_LOSS, "disk on fire"))

    assert (problem.status, problem.reason, problem.detail) == (500, "internal", "something went wrong on our side")
