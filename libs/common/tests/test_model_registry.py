"""The model registry on the machine's real Redis, each test under a key prefix of its own."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from facerestore_common.model_registry import (
    AUTO_ORDER,
    ModelOffer,
    ModelRegistry,
    ModelUnavailable,
    resolve_model,
)
from facerestore_common.topology import RESTORER_FAMILIES

GFPGAN = ModelOffer("gfpgan", "gfpgan-v1.4", "1.4", "e2cd4703" * 8, False, None, 2)
CODEFORMER = ModelOffer("codeformer", "codeformer-v0.1.0", "0.1.0", "1009e537" * 8, True, 0.5, 2)
CLASSICAL = ModelOffer("classical", "classical-opencv-v2", "2", "", False, None, 2)


@pytest.fixture
async def redis(redis_url: str, unique_name: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    try:
        yield client
    finally:
        keys = [key async for key in client.scan_iter(f"{unique_name}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


async def test_offers_of_every_live_worker_are_available_by_family(redis: Redis, unique_name: str) -> None:
    registry = ModelRegistry(redis, unique_name)
    await registry.announce("gpu-1", [GFPGAN, CODEFORMER])
    await registry.announce("cpu-1", [CLASSICAL])

    assert await registry.available() == {"gfpgan": GFPGAN, "codeformer": CODEFORMER, "classical": CLASSICAL}


async def test_a_withdrawn_worker_offers_nothing_and_the_others_stay(redis: Redis, unique_name: str) -> None:
    registry = ModelRegistry(redis, unique_name)
    await registry.announce("gpu-1", [GFPGAN, CODEFORMER])
    await registry.announce("cpu-1", [CLASSICAL])

    await registry.withdraw("gpu-1")

    assert await registry.available() == {"classical": CLASSICAL}


async def test_a_worker_that_stops_announcing_drops_out_after_the_ttl(redis: Redis, unique_name: str) -> None:
    registry = ModelRegistry(redis, unique_name, ttl_seconds=0.5)
    await registry.announce("gpu-1", [GFPGAN])
    await registry.announce("cpu-1", [CLASSICAL])
    assert set(await registry.available()) == {"gfpgan", "classical"}

    for _ in range(4):  # cpu-1 keeps announcing; gpu-1 has died
        await asyncio.sleep(0.2)
        await registry.announce("cpu-1", [CLASSICAL])

    assert await registry.available() == {"classical": CLASSICAL}
    # Its entry is gone from the set of workers too, not only its offers.
    assert await redis.zrange(f"{unique_name}:models:workers", 0, -1) == [b"cpu-1"]


async def test_the_most_recent_announcement_wins_when_workers_offer_different_models_of_a_family(
    redis: Redis, unique_name: str
) -> None:
    registry = ModelRegistry(redis, unique_name)
    older = ModelOffer("gfpgan", "gfpgan-v1.3", "1.3", "c953a88f" * 8, False, None, 2)
    await registry.announce("gpu-old", [older])
    await asyncio.sleep(0.01)
    await registry.announce("gpu-new", [GFPGAN])
    assert (await registry.available())["gfpgan"] == GFPGAN

    await asyncio.sleep(0.01)
    await registry.announce("gpu-old", [older])
    assert (await registry.available())["gfpgan"] == older


async def test_registries_under_different_prefixes_do_not_see_each_other(redis: Redis, unique_name: str) -> None:
    await ModelRegistry(redis, f"{unique_name}:a").announce("gpu-1", [GFPGAN])

    assert await ModelRegistry(redis, f"{unique_name}:b").available() == {}


async def test_an_announcement_replaces_the_workers_previous_offers(redis: Redis, unique_name: str) -> None:
    registry = ModelRegistry(redis, unique_name)
    await registry.announce("gpu-1", [GFPGAN, CODEFORMER])
    await registry.announce("gpu-1", [CODEFORMER])

    assert await registry.available() == {"codeformer": CODEFORMER}


def test_auto_resolves_to_the_best_family_a_live_worker_serves() -> None:
    assert resolve_model("auto", {"classical": CLASSICAL, "codeformer": CODEFORMER, "gfpgan": GFPGAN}) == "gfpgan"
    assert resolve_model("auto", {"classical": CLASSICAL, "codeformer": CODEFORMER}) == "codeformer"
    assert resolve_model("auto", {"classical": CLASSICAL}) == "classical"
    assert set(AUTO_ORDER) == set(RESTORER_FAMILIES)


def test_a_named_family_resolves_to_itself_only_when_served() -> None:
    available = {"classical": CLASSICAL, "gfpgan": GFPGAN}
    assert resolve_model("classical", available) == "classical"
    with pytest.raises(ModelUnavailable) as refused:
        resolve_model("codeformer", available)
    assert refused.value.model == "codeformer"
    assert "codeformer" in str(refused.value)


def test_auto_with_no_live_worker_is_unavailable_and_an_unknown_name_is_an_error() -> None:
    with pytest.raises(ModelUnavailable) as refused:
        resolve_model("auto", {})
    assert refused.value.model == "auto"
    with pytest.raises(ValueError, match="unknown model"):
        resolve_model("restoreformer", {"gfpgan": GFPGAN})


def test_an_offer_names_a_known_family() -> None:
    with pytest.raises(ValueError, match="unknown restorer family"):
        ModelOffer("restoreformer", "x", "1", "", False, None, 2)


async def test_an_announcement_with_its_own_ttl_outlives_the_registrys(redis: Redis, unique_name: str) -> None:
    """A worker group that scales to zero keeps a standby entry for longer than a worker's."""
    registry = ModelRegistry(redis, unique_name, ttl_seconds=0.3)
    await registry.announce("gpu-1", [GFPGAN])
    await registry.announce("group:gpu", [GFPGAN, CODEFORMER], ttl_seconds=30)

    await asyncio.sleep(0.5)

    assert await registry.available() == {"gfpgan": GFPGAN, "codeformer": CODEFORMER}
    with pytest.raises(ValueError):
        await registry.announce("gpu-1", [GFPGAN], ttl_seconds=0)
