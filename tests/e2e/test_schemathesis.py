"""Schemathesis against the running platform's own OpenAPI document: every operation is
called with generated (valid and invalid) requests, signed in as a fresh normal user who
has one restored photo, and the admin operations again as an admin. No answer may be a 5xx,
and every answer must be one the document declares: status code, content type, body schema
and headers (and a 405 names the allowed methods)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    allow_header_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from tests.conftest import face_photo
from tests.stack_harness import RunningStack, random_mobile

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    allow_header_conformance,
    unsupported_method,
]
EXAMPLES = settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    database=None,
    # Every example is a real request over the network to the whole platform.
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)
# The gateway's default per-user upload quota (RATE_LIMIT_UPLOADS_PER_USER, 10/hour).
UPLOADS_PER_USER = 10
# ... and search limit (RATE_LIMIT_SEARCHES_PER_USER, 30/minute).
SEARCHES_PER_USER = 30
# Generated files are never photos: past the token and the quota, the upload service refuses them
# (409 first when the options name a model no worker runs here: only classical does).
UPLOAD_REFUSALS = {401, 409, 413, 415, 422, 429}

schema = schemathesis.pytest.from_fixture("platform_schema")


@pytest.fixture(autouse=True)
def _node_id_for_schemathesis(request: pytest.FixtureRequest) -> None:
    # schemathesis 4.32 reads and rewrites Node._nodeid, which pytest 9 no longer has.
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


@pytest.fixture(scope="module")
def platform_schema(stack: RunningStack) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{stack.base_url}/openapi.json", timeout=30)


@pytest.fixture(scope="module")
def http(stack: RunningStack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.base_url, timeout=30) as client:
        yield client


def bearer(tokens: dict[str, str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens['access_token']}"}


@pytest.fixture(scope="module")
def user_auth(stack: RunningStack, http: httpx.Client) -> dict[str, str]:
    """A fresh user with one real photo, so that lists have an item to check against the schema."""
    headers = bearer(stack.sign_in(http, random_mobile()))
    photo = ("face.jpg", face_photo("t1.jpg").read_bytes(), "image/jpeg")
    uploaded = http.post("/v1/images", headers=headers, files={"file": photo}, data={"tags": "schemathesis"})
    assert uploaded.status_code == 202, uploaded.text
    deadline = time.monotonic() + 90
    while http.get(f"/v1/images/{uploaded.json()['id']}", headers=headers).json()["status"] not in ("done", "failed"):
        assert time.monotonic() < deadline, "the photo was not restored in time"
        time.sleep(0.3)
    return headers


class Uploaders:
    """Signs in a new user whenever the last one has spent their upload quota (or search limit),
    so that generated requests reach the services' checks instead of stopping at 429."""

    def __init__(self, stack: RunningStack, http: httpx.Client, per_user: int = UPLOADS_PER_USER) -> None:
        self._stack = stack
        self._http = http
        self._per_user = per_user
        self._headers: dict[str, str] = {}
        self._uses = 0

    def headers(self) -> dict[str, str]:
        if self._uses % self._per_user == 0:
            self._headers = bearer(self._stack.sign_in(self._http, random_mobile()))
        self._uses += 1
        return self._headers


@pytest.fixture(scope="module")
def uploaders(stack: RunningStack, http: httpx.Client) -> Uploaders:
    return Uploaders(stack, http)


@pytest.fixture(scope="module")
def searchers(stack: RunningStack, http: httpx.Client) -> Uploaders:
    return Uploaders(stack, http, per_user=SEARCHES_PER_USER)


@pytest.fixture(scope="module")
def admin_auth(stack: RunningStack, http: httpx.Client) -> dict[str, str]:
    headers = bearer(stack.sign_in(http, stack.admin_sign_in_phone()))
    me = http.get("/v1/me", headers=headers)
    assert me.json()["role"] == "admin", me.text
    return headers


# Logout would end the session that every later example signs its requests with; erasing the
# account (or every image) would take the user and their photo away: those run as throwaway users.
@(
    schema.exclude(method="POST", path="/v1/auth/logout")
    .exclude(method="DELETE", path="/v1/me")
    .exclude(method="DELETE", path="/v1/images")
    .parametrize()
)
@EXAMPLES
def test_every_operation_as_a_normal_user(
    case: schemathesis.Case, user_auth: dict[str, str], uploaders: Uploaders, searchers: Uploaders
) -> None:
    # (Cases for other methods on an operation's path check the 405 answer.)
    if case.method.upper() == "POST" and case.operation.path == "/v1/images":
        response = case.call_and_validate(headers=uploaders.headers(), checks=CHECKS, timeout=30)
        assert response.status_code in UPLOAD_REFUSALS, response.text
    elif case.method.upper() == "POST" and case.operation.path == "/v1/search":
        case.call_and_validate(headers=searchers.headers(), checks=CHECKS, timeout=30)
    else:
        case.call_and_validate(headers=user_auth, checks=CHECKS, timeout=30)


@schema.include(method="DELETE", path_regex=r"^/v1/(me|images)$").parametrize()
@settings(EXAMPLES, max_examples=5)
def test_erasing_operations_as_a_throwaway_user(
    case: schemathesis.Case, stack: RunningStack, http: httpx.Client
) -> None:
    # (Cases for other methods on these paths check the 405 answer.)
    case.call_and_validate(headers=bearer(stack.sign_in(http, random_mobile())), checks=CHECKS, timeout=30)


@schema.include(path_regex=r"^/v1/admin/").parametrize()
@EXAMPLES
def test_admin_operations_as_an_admin(case: schemathesis.Case, admin_auth: dict[str, str]) -> None:
    case.call_and_validate(headers=admin_auth, checks=CHECKS, timeout=30)
