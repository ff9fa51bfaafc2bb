"""POST /v1/search through the real FastAPI app and the machine's real Redis, with every service
pointed at a port where nothing listens: what the gateway itself decides before a search goes
on (the two body forms, validation, 413/415, the per-user search limit and its headers) and what
its OpenAPI document promises client generators. Searches that pass reach the (absent) backend
and are answered 503. Tokens are signed with a key made here and verified against its JWKS.
The search results themselves are tested on the running stack (tests/e2e/test_search.py)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from gateway_service import problems
from gateway_service.settings import Settings

UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"
JPEG = ("face.jpg", b"\xff\xd8\xff\xe0" + b"\0" * 64, "image/jpeg")


SettingsFactory = Callable[..., Settings]
# conftest.py's fixtures: the app with the tests' signing key, and tokens signed with it.
RunGateway = Callable[..., AbstractAsyncContextManager[tuple[FastAPI, httpx.AsyncClient]]]
SignBearer = Callable[..., dict[str, str]]
# Every test leaves no Redis keys behind (conftest.py).
pytestmark = pytest.mark.usefixtures("forget_keys")


def assert_problem(response: httpx.Response, status: int, reason: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["type"] == problems.PROBLEM_BASE + reason
    return body


def error_fields(body: dict[str, Any]) -> set[str]:
    return {"/".join(str(part) for part in error["loc"]) for error in body["errors"]}


async def test_a_valid_photo_search_and_a_valid_json_search_both_go_on_to_the_backend(
    redis_url: str, unique_name: str, running: RunGateway, bearer: SignBearer, make_settings: SettingsFactory
) -> None:
    settings = make_settings(redis_url, unique_name)
    headers = bearer(settings, "user-1")
    async with running(settings) as (_, http):
        photo = await http.post(
            "/v1/search",
            headers=headers,
            files={"file": JPEG},
            data={"top_k": "5", "min_score": "0.6", "from": "2026-01-01T00:00:00Z", "tag": ["a", "b"], "face": "1"},
        )
        stored = await http.post(
            "/v1/search",
            headers=headers,
            json={"image_id": "img-1", "face_index": 0, "location": "Lisbon", "to": "2026-12-31T23:59:59+01:00"},
        )

    # Past every check of the gateway's own, the absent history service is what answers.
    assert_problem(photo, 503, "service-unavailable")
    assert_problem(stored, 503, "service-unavailable")


async def test_each_search_is_counted_against_the_users_own_limit_with_its_headers(
    redis_url: str, unique_name: str, running: RunGateway, bearer: SignBearer, make_settings: SettingsFactory
) -> None:
    settings = make_settings(redis_url, unique_name, rate_limit_searches_per_user="2/minute")
    anna, ben = bearer(settings, "anna"), bearer(settings, "ben")
    body = {"image_id": "img-1", "face_index": 0}
    async with running(settings) as (_, http):
        allowed = [await http.post("/v1/search", headers=anna, json=body) for _ in range(2)]
        refused = await http.post("/v1/search", headers=anna, json=body)
        other_user = await http.post("/v1/search", headers=ben, json=body)

    assert [response.headers["ratelimit-remaining"] for response in allowed] == ["1", "0"]
    assert all(response.headers["ratelimit-policy"] == "2;w=60" for response in allowed)
    limited = assert_problem(refused, 429, "rate-limited")
    assert limited["limit"] == "searches-per-user"
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert other_user.status_code == 503
    assert other_user.headers["ratelimit-remaining"] == "1"


async def test_without_redis_searches_fail_closed(
    redis_url: str, unique_name: str, running: RunGateway, bearer: SignBearer, make_settings: SettingsFactory
) -> None:
    settings = make_settings(UNREACHABLE_REDIS, unique_name)
    async with running(settings) as (_, http):
        response = await http.post("/v1/search", headers=bearer(settings, "u"), json={"image_id": "i", "face_index": 0})

    assert_problem(response, 503, "rate-limit-unavailable")


async def test_a_search_needs_a_token(
    redis_url: str, unique_name: str, running: RunGateway, bearer: SignBearer, make_settings: SettingsFactory
) -> None:
    async with running(make_settings(redis_url, unique_name)) as (_, http):
        response = await http.post("/v1/search", files={"file": JPEG})

    assert_problem(response, 401, "unauthenticated")


@pytest.mark.parametrize(
    ("data", "wrong"),
    [
        ({"top_k": "0"}, "body/top_k"),
        ({"top_k": "51"}, "body/top_k"),
        ({"min_score": "1.5"}, "body/min_score"),
        ({"min_score": "nan"}, "body/min_score"),
        ({"scope": "everyone"}, "body/scope"),
        ({"face": "-1"}, "body/face"),
        ({"from": "yesterday"}, "body/from"),
        ({"from": "2026-02-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"}, "body"),
        ({"from": "0001-01-01T00:00:00+01:00"}, "body/from"),
        ({"tag": ["x" * 33]}, "body/tag/0"),
        ({"tag": [f"t{n}" for n in range(11)]}, "body/tag"),
        ({"location": "x" * 101}, "body/location"),
    ],
)
async def test_photo_search_options_out_of_range_are_refused_naming_the_field(
    redis_url: str,
    unique_name: str,
    running: RunGateway,
    bearer: SignBearer,
    data: dict[str, Any],
    wrong: str,
    make_settings: SettingsFactory,
) -> None:
    settings = make_settings(redis_url, unique_name)
    async with running(settings) as (_, http):
        response = await http.post("/v1/search", headers=bearer(settings, "u"), files={"file": JPEG}, data=data)

    assert wrong in error_fields(assert_problem(response, 422, "validation-error"))


async def test_a_photo_search_without_a_file_or_with_an_empty_one_is_refused(
    redis_url: str, unique_name: str, running: RunGateway, bearer: SignBearer, make_settings: SettingsFactory
) -> None:
    settings = make_settings(redis_url, unique_name)
    async with running(settings) as (_, http):
        # A form field named "file" that is not a file part is no photo either.
        headers = bearer(settings, "u")
        not_a_file = await http.post("/v1/search", headers=headers, files={"top_k": (None, "3"), "file": (None, "x")})
        empty = await http.post("/v1/search", headers=headers, files={"file": ("empty.jpg", b"", "image/jpeg")})

    assert error_fields(assert_problem(not_a_file, 422, "validation-error")) == {"body/file"}
    assert error_fields(assert_problem(empty, 422, "validation-error")) == {"body/file"}


@pytest.mark.parametrize(
    ("content", "wrong"),
    [
        (b'{"face_index": 0}', "body/image_id"),
        (b'{"image_id": "i", "face_index": -1}', "body/face_index"),
        (b'{"image_id": "i", "face_index": 0, "top_k": 99}', "body/top_k"),
        (b'{"image_id": "i", "face_index": 0, "scope": "mine"}', "body/scope"),
        (b"[1, 2]", "body"),
        (b"{not json", "body"),
    ],
)
async def test_json_searches_that_are_not_valid_are_refused_naming_the_field(
    redis_url: str,
    unique_name: str,
    running: RunGateway,
    bearer: SignBearer,
    content: bytes,
    wrong: str,
    make_settings: SettingsFactory,
) -> None:
    settings = make_settings(redis_url, unique_name)
    headers = {**bearer(settings, "u"), "Content-Type": "application/json"}
    async with running(settings) as (_, http):
        response = await http.post("/v1/search", headers=headers, content=content)

    assert wrong in error_fields(assert_problem(response, 422, "validation-error"))


async def test_a_body_that_is_neither_form_nor_json_is_unsupported(
    redis_url: str, unique_name: str, running: RunGateway, bearer: SignBearer, make_settings: SettingsFactory
) -> None:
    settings = make_settings(redis_url, unique_name)
    headers = {**bearer(settings, "u"), "Content-Type": "image/jpeg"}
    async with running(settings) as (_, http):
        response = await http.post("/v1/search", headers=headers, content=JPEG[1])

    assert_problem(response, 415, "unsupported-media-type")


async def test_a_photo_over_the_upload_limit_is_refused_413(
    redis_url: str, unique_name: str, running: RunGateway, bearer: SignBearer, make_settings: SettingsFactory
) -> None:
    settings = make_settings(redis_url, unique_name, max_upload_bytes=4096)
    big = ("big.jpg", b"\xff\xd8\xff\xe0" + b"\0" * 5000, "image/jpeg")
    huge = ("huge.jpg", b"\xff\xd8\xff\xe0" + b"\0" * 200_000, "image/jpeg")
    async with running(settings) as (_, http):
        headers = bearer(settings, "u")
        over = await http.post("/v1/search", headers=headers, files={"file": big})
        far_over = await http.post("/v1/search", headers=headers, files={"file": huge})

    # Just over: read and measured by the route; far over: refused while the body streams in.
    assert_problem(over, 413, "payload-too-large")
    assert_problem(far_over, 413, "payload-too-large")


async def test_the_openapi_document_describes_both_request_forms_and_every_answer(
    redis_url: str, unique_name: str, running: RunGateway, bearer: SignBearer, make_settings: SettingsFactory
) -> None:
    async with running(make_settings(redis_url, unique_name)) as (_, http):
        document = (await http.get("/openapi.json")).json()

    operation = document["paths"]["/v1/search"]["post"]
    content = operation["requestBody"]["content"]
    assert content["multipart/form-data"]["schema"] == {"$ref": "#/components/schemas/SearchUpload"}
    assert content["application/json"]["schema"] == {"$ref": "#/components/schemas/SearchByFace"}
    schemas = document["components"]["schemas"]
    upload, by_face = schemas["SearchUpload"], schemas["SearchByFace"]
    assert upload["properties"]["file"]["format"] == "binary"
    assert upload["required"] == ["file"]
    assert set(by_face["required"]) == {"image_id", "face_index"}
    for form in (upload, by_face):
        assert {"top_k", "min_score", "from", "to", "location", "tag", "scope"} <= set(form["properties"])
        assert form["properties"]["scope"]["enum"] == ["own", "all"]
    assert set(operation["responses"]) == {"200", "401", "403", "404", "413", "415", "422", "429", "500", "503"}
    assert "RateLimit-Remaining" in operation["responses"]["200"]["headers"]
    result = schemas["SearchResult"]["properties"]
    assert set(result) == {"query_faces", "matches", "model"}
    assert {"image_id", "face_index", "score", "box", "created_at", "tags", "location"} <= set(
        schemas["FaceMatchOut"]["properties"]
    )
