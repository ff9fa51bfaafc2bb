"""The page cache through the real FastAPI app, the machine's real Redis and a real gRPC history
server made here that counts its calls and answers what the test sets: which reads are answered
from memory, and every reason one is not (another token, another query, a raised generation, an
ended session, an answer past its age, Redis out of reach). That history raises the generation
from each of its write paths is tested in history (test_tracked_items.py); that the lists stay
true through real changes, on the running stack (tests/e2e/test_library.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field

import grpc
import httpx
import jwt
import pytest
from fastapi import FastAPI
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from facerestore.history.v1 import history_pb2, history_pb2_grpc
from facerestore_common.library_generation import LibraryGenerations
from facerestore_common.revocation import SessionRevocations
from gateway_service.page_cache import PageCache
from gateway_service.settings import Settings

UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"
SettingsFactory = Callable[..., Settings]
# conftest.py's fixtures: the app with the tests' signing key, and tokens signed with it.
RunGateway = Callable[..., AbstractAsyncContextManager[tuple[FastAPI, httpx.AsyncClient]]]
SignBearer = Callable[..., dict[str, str]]
pytestmark = pytest.mark.usefixtures("forget_keys")


@dataclass
class CountingHistory(history_pb2_grpc.HistoryServiceServicer):
    """Answers every list with one image tagged `tag`, and counts the calls that reached it."""

    tag: str = "first"
    calls: list[str] = field(default_factory=list)

    def _image(self, image_id: str) -> history_pb2.Image:
        image = history_pb2.Image(id=image_id, user_id="anna", status="done", tags=[self.tag])
        image.created_at.FromSeconds(1_700_000_000)
        image.updated_at.FromSeconds(1_700_000_000)
        return image

    async def ListImages(  # noqa: N802
        self, request: history_pb2.ListImagesRequest, context: object
    ) -> history_pb2.ListImagesResponse:
        self.calls.append(f"list limit={request.limit}")
        return history_pb2.ListImagesResponse(images=[self._image("img-1")])

    async def GetImage(  # noqa: N802
        self, request: history_pb2.GetImageRequest, context: object
    ) -> history_pb2.GetImageResponse:
        self.calls.append(f"get {request.image_id}")
        return history_pb2.GetImageResponse(image=self._image(request.image_id))


@asynccontextmanager
async def history_server() -> AsyncIterator[tuple[CountingHistory, str]]:
    history = CountingHistory()
    server = grpc.aio.server()
    history_pb2_grpc.add_HistoryServiceServicer_to_server(history, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield history, f"127.0.0.1:{port}"
    finally:
        await server.stop(None)


def page_cache_hits() -> float:
    return REGISTRY.get_sample_value("gateway_page_cache_lookups_total", {"result": "hit"}) or 0.0


def tags_of(page: httpx.Response) -> list[str]:
    assert page.status_code == 200, page.text
    return [tag for item in page.json()["items"] for tag in item["tags"]]


async def test_the_same_read_with_the_same_token_is_answered_from_memory_until_the_users_generation_moves(
    redis_url: str,
    unique_name: str,
    running: RunGateway,
    bearer: SignBearer,
    make_settings: SettingsFactory,
    generations: LibraryGenerations,
) -> None:
    async with history_server() as (history, target):
        settings = make_settings(redis_url, unique_name, history_grpc_target=target)
        anna = bearer(settings, "anna")
        hits_before = page_cache_hits()
        async with running(settings) as (_, http):
            # The first read verifies the token: only from then on can one be served from memory.
            first = await http.get("/v1/images?limit=20", headers=anna)
            built = await http.get("/v1/images?limit=20", headers=anna)
            served = await http.get("/v1/images?limit=20", headers=anna)
            assert history.calls == ["list limit=20", "list limit=20"]
            assert served.content == built.content == first.content
            assert served.headers["content-type"] == "application/json"
            assert served.headers["cache-control"] == "no-store"
            assert "ratelimit-remaining" in served.headers and "x-request-id" in served.headers
            assert int(served.headers["ratelimit-remaining"]) < int(built.headers["ratelimit-remaining"])

            # Another query, and one image, are answers of their own.
            await http.get("/v1/images?limit=5", headers=anna)
            await http.get("/v1/images/img-1", headers=anna)
            await http.get("/v1/images/img-1", headers=anna)
            assert history.calls[2:] == ["list limit=5", "get img-1"]

            # A write to another user's images changes nothing for anna; one to hers does.
            await generations.bump(["ben"])
            assert tags_of(await http.get("/v1/images?limit=20", headers=anna)) == ["first"]
            history.tag = "second"
            await generations.bump(["anna"])
            assert tags_of(await http.get("/v1/images?limit=20", headers=anna)) == ["second"]
            assert tags_of(await http.get("/v1/images?limit=20", headers=anna)) == ["second"]
            assert history.calls[4:] == ["list limit=20"]
            assert page_cache_hits() == hits_before + 4


async def test_a_generation_that_expired_or_was_evicted_never_brings_a_kept_answer_back(
    redis_url: str,
    unique_name: str,
    running: RunGateway,
    bearer: SignBearer,
    make_settings: SettingsFactory,
    generations: LibraryGenerations,
) -> None:
    async with history_server() as (history, target):
        settings = make_settings(redis_url, unique_name, history_grpc_target=target)
        anna = bearer(settings, "anna")
        async with running(settings) as (_, http):
            await generations.bump(["anna"])
            for _ in range(3):  # verify the token, keep the answer, serve it
                assert tags_of(await http.get("/v1/images", headers=anna)) == ["first"]
            assert len(history.calls) == 2

            # Gone (its TTL, or Redis's eviction), then a write: the new generation is one no
            # kept answer carries (a counter would count to the kept answer's value again).
            await generations.forget(["anna"])
            history.tag = "second"
            await generations.bump(["anna"])
            assert tags_of(await http.get("/v1/images", headers=anna)) == ["second"]

            # Gone with no write since: the read that finds it absent starts a new one.
            await generations.forget(["anna"])
            history.tag = "third"
            assert tags_of(await http.get("/v1/images", headers=anna)) == ["third"]
            assert await generations.current("anna") is not None
            assert tags_of(await http.get("/v1/images", headers=anna)) == ["third"]
            assert len(history.calls) == 4


async def test_an_answer_is_never_served_to_another_token_to_an_ended_session_or_past_its_age(
    redis_url: str, unique_name: str, running: RunGateway, bearer: SignBearer, make_settings: SettingsFactory
) -> None:
    async with history_server() as (history, target):
        settings = make_settings(redis_url, unique_name, history_grpc_target=target, page_cache_max_age_seconds=0.5)
        anna, anna_elsewhere, ben = (bearer(settings, user) for user in ("anna", "anna", "ben"))
        redis = Redis.from_url(redis_url)
        async with running(settings, check_sessions=True) as (_, http):
            for headers in (anna, anna, anna_elsewhere, anna_elsewhere, ben, ben):
                assert (await http.get("/v1/images", headers=headers)).status_code == 200
            # Each token built its own answer once (verifying), then once more to keep.
            assert len(history.calls) == 6

            await asyncio.sleep(0.6)
            await http.get("/v1/images", headers=anna)
            assert len(history.calls) == 7

            token = anna["Authorization"].removeprefix("Bearer ")
            session = jwt.decode(token, options={"verify_signature": False})["sid"]
            await SessionRevocations(redis, unique_name).revoke(session, 60)
            ended = await http.get("/v1/images", headers=anna)
            assert ended.status_code == 401
            assert len(history.calls) == 7
        await redis.aclose()


async def test_without_redis_every_read_goes_to_history(
    running: RunGateway, bearer: SignBearer, make_settings: SettingsFactory, unique_name: str
) -> None:
    async with history_server() as (history, target):
        settings = make_settings(UNREACHABLE_REDIS, unique_name, history_grpc_target=target)
        anna = bearer(settings, "anna")
        async with running(settings) as (_, http):
            for _ in range(3):
                assert (await http.get("/v1/images", headers=anna)).status_code == 200
        assert len(history.calls) == 3


async def test_a_page_cache_of_no_bytes_keeps_nothing(
    redis_url: str, unique_name: str, running: RunGateway, bearer: SignBearer, make_settings: SettingsFactory
) -> None:
    async with history_server() as (history, target):
        settings = make_settings(redis_url, unique_name, history_grpc_target=target, page_cache_bytes=0)
        anna = bearer(settings, "anna")
        async with running(settings) as (_, http):
            for _ in range(3):
                assert (await http.get("/v1/images", headers=anna)).status_code == 200
        assert len(history.calls) == 3


def test_the_oldest_answers_make_way_when_the_memory_is_spent() -> None:
    pages = PageCache(max_bytes=4000, max_age_seconds=30)
    for number in range(5):
        pages.keep(("token", f"/v1/images/{number}", b""), b"1", b"x" * 1000, None)
    assert pages.size_bytes == 4000
    assert pages.lookup(("token", "/v1/images/0", b""), b"1") is None
    assert pages.lookup(("token", "/v1/images/4", b""), b"1") is not None
    assert pages.lookup(("token", "/v1/images/4", b""), b"2") is None
    assert pages.size_bytes == 3000
