"""Models and options through the real FastAPI app and the machine's real Redis, with every
service pointed at a port where nothing listens: GET /v1/models tells what live workers announce
(facerestore_common.model_registry), an upload or a reprocess that names a model no worker runs
is 409 `model-unavailable` naming it, an option the model lacks is 422 `option-unsupported`,
malformed options are 422 `validation-error`, and none of these spends the upload quota.
Requests that pass reach the (absent) services and are answered 503; the whole flow runs on the
stack (tests/e2e/test_versions.py)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis

from facerestore.events.v1 import events_pb2
from facerestore_common.model_registry import ModelOffer, ModelRegistry
from gateway_service import problems
from gateway_service.model_catalog import ModelCatalog
from gateway_service.model_choice import OptionsAsked, choose, live_models
from gateway_service.problems import Problem
from gateway_service.settings import Settings

JPEG = ("face.jpg", b"\xff\xd8\xff\xe0" + b"\0" * 64, "image/jpeg")
GFPGAN = ModelOffer("gfpgan", "gfpgan-v1.4", "1.4", "e2" * 32, False, None, 2)
CODEFORMER = ModelOffer("codeformer", "codeformer-v0.1.0", "0.1.0", "10" * 32, True, 0.5, 2)
CLASSICAL = ModelOffer("classical", "classical-opencv-v2", "2", "", False, None, 1)

SettingsFactory = Callable[..., Settings]
# conftest.py's fixtures: the app with the tests' signing key, and tokens signed with it.
RunGateway = Callable[..., AbstractAsyncContextManager[tuple[FastAPI, httpx.AsyncClient]]]
SignBearer = Callable[..., dict[str, str]]
pytestmark = pytest.mark.usefixtures("forget_keys")


def assert_problem(response: httpx.Response, status: int, reason: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["type"] == problems.PROBLEM_BASE + reason
    return body


def error_fields(body: dict[str, Any]) -> set[str]:
    return {"/".join(str(part) for part in error["loc"]) for error in body["errors"]}


# --- choosing a model ----------------------------------------------------------------------------


def test_auto_picks_gfpgan_first_and_falls_back_in_order() -> None:
    assert (
        choose(OptionsAsked(), {"gfpgan": GFPGAN, "codeformer": CODEFORMER, "classical": CLASSICAL}).model == "gfpgan"
    )
    assert choose(OptionsAsked(), {"codeformer": CODEFORMER, "classical": CLASSICAL}).model == "codeformer"
    assert choose(OptionsAsked(), {"classical": CLASSICAL}).model == "classical"


def test_auto_with_a_fidelity_picks_a_model_that_has_one() -> None:
    options = choose(
        OptionsAsked(fidelity=0.3, faces=[2, 0, 2], upscale=2), {"gfpgan": GFPGAN, "codeformer": CODEFORMER}
    )

    assert options == events_pb2.RestorationOptions(model="codeformer", fidelity=0.3, faces=[0, 2], upscale=2)


def test_a_named_model_is_never_substituted() -> None:
    with pytest.raises(Problem) as missing:
        choose(OptionsAsked(model="codeformer"), {"gfpgan": GFPGAN, "classical": CLASSICAL})
    with pytest.raises(Problem) as nothing:
        choose(OptionsAsked(), {})
    with pytest.raises(Problem) as no_fidelity:
        choose(OptionsAsked(model="gfpgan", fidelity=0.5), {"gfpgan": GFPGAN, "codeformer": CODEFORMER})
    with pytest.raises(Problem) as too_large:
        choose(OptionsAsked(upscale=2), {"classical": CLASSICAL})

    assert (missing.value.status, missing.value.reason, missing.value.extra) == (
        409,
        "model-unavailable",
        {"model": "codeformer"},
    )
    assert (nothing.value.status, nothing.value.extra) == (409, {"model": "auto"})
    assert (no_fidelity.value.status, no_fidelity.value.reason) == (422, "option-unsupported")
    assert "gfpgan-v1.4" in no_fidelity.value.detail
    assert (too_large.value.status, too_large.value.reason) == (422, "option-unsupported")
    assert choose(OptionsAsked(model="gfpgan"), {"gfpgan": GFPGAN, "codeformer": CODEFORMER}).model == "gfpgan"


# --- GET /v1/models ------------------------------------------------------------------------------


async def test_the_model_list_tells_what_live_workers_announce(
    redis_url: str, unique_name: str, running: RunGateway, bearer: SignBearer, make_settings: SettingsFactory
) -> None:
    settings = make_settings(redis_url, unique_name)
    headers = bearer(settings, "user-1")
    async with running(settings) as (app, http):
        before = await http.get("/v1/models", headers=headers)
        await app.state.models.announce("gpu-worker-1", [GFPGAN, CODEFORMER])
        await app.state.models.announce("cpu-worker-1", [CLASSICAL])
        during = await http.get("/v1/models", headers=headers)
        await app.state.models.withdraw("gpu-worker-1")
        after = await http.get("/v1/models", headers=headers)
        anonymous = await http.get("/v1/models")

    assert before.status_code == 200, before.text
    assert before.json() == {
        "models": [
            {
                "name": name,
                "available": False,
                "model_id": None,
                "version": None,
                "sha256": None,
                "supports_fidelity": None,
                "default_fidelity": None,
                "max_upscale": None,
            }
            for name in ("gfpgan", "codeformer", "classical")
        ],
        "auto": None,
    }
    listed = {model["name"]: model for model in during.json()["models"]}
    assert during.json()["auto"] == "gfpgan"
    assert listed["codeformer"] == {
        "name": "codeformer",
        "available": True,
        "model_id": "codeformer-v0.1.0",
        "version": "0.1.0",
        "sha256": "10" * 32,
        "supports_fidelity": True,
        "default_fidelity": 0.5,
        "max_upscale": 2,
    }
    assert listed["classical"]["available"] is True and listed["classical"]["sha256"] is None
    assert [model["available"] for model in after.json()["models"]] == [False, False, True]
    assert after.json()["auto"] == "classical"
    assert_problem(anonymous, 401, "unauthenticated")


async def test_without_redis_which_models_run_is_unknown_and_answered_503() -> None:
    redis = Redis.from_url("redis://127.0.0.1:1/0", socket_timeout=1.0, socket_connect_timeout=1.0)
    try:
        with pytest.raises(Problem) as unknown:
            await live_models(ModelCatalog(ModelRegistry(redis, "unreachable"), 1.0, 60.0))
    finally:
        await redis.aclose()

    assert (unknown.value.status, unknown.value.reason) == (503, "service-unavailable")


# --- uploads with options ------------------------------------------------------------------------


async def test_an_upload_naming_a_model_no_worker_runs_is_409_naming_it_and_spends_no_quota(
    redis_url: str, unique_name: str, running: RunGateway, bearer: SignBearer, make_settings: SettingsFactory
) -> None:
    settings = make_settings(redis_url, unique_name, rate_limit_uploads_per_user="5/hour")
    headers = bearer(settings, "anna")
    async with running(settings) as (app, http):
        nothing_runs = await http.post("/v1/images", headers=headers, files={"file": JPEG})
        await app.state.models.announce("cpu-worker-1", [CLASSICAL])
        codeformer = await http.post("/v1/images", headers=headers, files={"file": JPEG}, data={"model": "codeformer"})
        classical = await http.post("/v1/images", headers=headers, files={"file": JPEG}, data={"model": "classical"})

    assert assert_problem(nothing_runs, 409, "model-unavailable")["model"] == "auto"
    body = assert_problem(codeformer, 409, "model-unavailable")
    assert body["model"] == "codeformer"
    assert "codeformer" in body["detail"]
    for refused in (nothing_runs, codeformer):
        assert refused.headers["ratelimit-remaining"] == "5"
    # A model that runs: on to the (absent) upload service.
    assert_problem(classical, 503, "service-unavailable")


async def test_upload_options_the_model_lacks_or_that_are_malformed_are_422_and_spend_no_quota(
    redis_url: str, unique_name: str, running: RunGateway, bearer: SignBearer, make_settings: SettingsFactory
) -> None:
    settings = make_settings(redis_url, unique_name, rate_limit_uploads_per_user="5/hour")
    headers = bearer(settings, "anna")
    async with running(settings) as (app, http):
        await app.state.models.announce("gpu-worker-1", [GFPGAN])

        async def upload(**fields: str) -> httpx.Response:
            return await http.post("/v1/images", headers=headers, files={"file": JPEG}, data=fields)

        no_fidelity = await upload(model="gfpgan", fidelity="0.5")
        malformed = {
            "model": await upload(model="stable-diffusion"),
            "fidelity": await upload(fidelity="1.5"),
            "faces": await upload(faces="0,x"),
            "upscale": await upload(upscale="3"),
        }
        too_many_faces = await upload(faces=",".join(str(index) for index in range(101)))
        fine = await upload(model="auto", faces=" 0, 2 ", upscale="2")

    assert assert_problem(no_fidelity, 422, "option-unsupported")["model"] == "gfpgan"
    for field, response in malformed.items():
        assert error_fields(assert_problem(response, 422, "validation-error")) == {f"body/{field}"}
    assert error_fields(assert_problem(too_many_faces, 422, "validation-error")) == {"body/faces"}
    for refused in (no_fidelity, *malformed.values(), too_many_faces):
        assert refused.headers.get("ratelimit-remaining", "5") == "5"
    assert_problem(fine, 503, "service-unavailable")


# --- reprocessing and preferring ------------------------------------------------------------------


async def test_a_reprocess_with_malformed_options_is_422_and_spends_no_quota(
    redis_url: str, unique_name: str, running: RunGateway, bearer: SignBearer, make_settings: SettingsFactory
) -> None:
    settings = make_settings(redis_url, unique_name, rate_limit_uploads_per_user="5/hour")
    headers = bearer(settings, "anna")
    path = "/v1/images/img-1/restorations"
    async with running(settings) as (_, http):
        refused = {
            "model": await http.post(path, headers=headers, json={"model": "dall-e"}),
            "fidelity": await http.post(path, headers=headers, json={"fidelity": -0.1}),
            "faces/0": await http.post(path, headers=headers, json={"faces": [1000]}),
            "upscale": await http.post(path, headers=headers, json={"upscale": 4}),
            "colour": await http.post(path, headers=headers, json={"colour": "sepia"}),
        }
        valid = await http.post(path, headers=headers, json={"model": "codeformer", "fidelity": 0.2, "faces": [0]})

    for field, response in refused.items():
        assert error_fields(assert_problem(response, 422, "validation-error")) == {f"body/{field}"}
        assert response.headers.get("ratelimit-remaining", "5") == "5"
    # Valid: counted, then the (absent) history service answers, and the spend is taken back.
    assert_problem(valid, 503, "service-unavailable")
    assert valid.headers["ratelimit-remaining"] == "5"


async def test_preferring_takes_a_restoration_id_and_cannot_be_cleared(
    redis_url: str, unique_name: str, running: RunGateway, bearer: SignBearer, make_settings: SettingsFactory
) -> None:
    settings = make_settings(redis_url, unique_name)
    headers = bearer(settings, "anna")
    async with running(settings) as (_, http):
        cleared = await http.patch("/v1/images/img-1", headers=headers, json={"preferred_restoration": None})
        not_an_id = await http.patch("/v1/images/img-1", headers=headers, json={"preferred_restoration": "best"})
        valid = await http.patch("/v1/images/img-1", headers=headers, json={"preferred_restoration": "r2"})

    assert error_fields(assert_problem(cleared, 422, "validation-error")) == {"body/preferred_restoration"}
    assert error_fields(assert_problem(not_an_id, 422, "validation-error")) == {"body/preferred_restoration"}
    assert_problem(valid, 503, "service-unavailable")


# --- the catalog the gateway answers from --------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_the_catalog_reads_the_registry_at_most_once_per_refresh_and_keeps_a_model_for_its_grace(
    redis_url: str, unique_name: str
) -> None:
    redis = Redis.from_url(redis_url)
    clock = Clock()
    registry = ModelRegistry(redis, unique_name)
    catalog = ModelCatalog(registry, refresh_seconds=1.0, grace_seconds=30.0, clock=clock)
    try:
        await registry.announce("cpu-worker-1", [CLASSICAL])
        first = await catalog.available()
        await registry.announce("gpu-worker-1", [GFPGAN])
        cached = await catalog.available()  # within the refresh: no new read
        clock.now += 1.0
        refreshed = await catalog.available()
        # The GPU worker crashed and Redis restarted: the registry has forgotten everyone.
        await registry.withdraw("gpu-worker-1")
        await registry.withdraw("cpu-worker-1")
        clock.now += 29.0
        within_grace = await catalog.available()
        await registry.announce("cpu-worker-1", [CLASSICAL])
        clock.now += 2.0
        after_grace = await catalog.available()
    finally:
        await redis.delete(f"{unique_name}:models:workers")
        await redis.aclose()

    assert list(first) == ["classical"]
    assert list(cached) == ["classical"]
    assert sorted(refreshed) == ["classical", "gfpgan"]
    assert sorted(within_grace) == ["classical", "gfpgan"]
    assert list(after_grace) == ["classical"]


async def test_the_catalog_answers_from_its_last_read_while_redis_is_away_within_the_grace(
    redis_url: str, unique_name: str
) -> None:
    redis = Redis.from_url(redis_url)
    unreachable = Redis.from_url("redis://127.0.0.1:1/0", socket_timeout=1.0, socket_connect_timeout=1.0)
    clock = Clock()
    registry = ModelRegistry(redis, unique_name)
    catalog = ModelCatalog(registry, refresh_seconds=1.0, grace_seconds=30.0, clock=clock)
    try:
        await registry.announce("cpu-worker-1", [CLASSICAL])
        before = await catalog.available()
        catalog.registry = ModelRegistry(unreachable, unique_name)  # Redis goes away
        clock.now += 5.0
        during = await catalog.available()
        clock.now += 30.0
        with pytest.raises(Problem) as unknown:
            await live_models(catalog)
    finally:
        await registry.withdraw("cpu-worker-1")
        await redis.aclose()
        await unreachable.aclose()

    assert list(before) == list(during) == ["classical"]
    assert (unknown.value.status, unknown.value.reason) == (503, "service-unavailable")
