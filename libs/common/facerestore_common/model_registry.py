"""Which restorer models can run here now: every restore worker announces what it serves
in Redis with a time to live, and the gateway asks before it accepts an upload or a reprocess.

A worker announces every ttl/3 seconds and withdraws when it stops gracefully; one that dies
drops out once its last announcement expires. Each announcement is kept twice: the offers
under a key of the worker's own (expiring), and the worker's id in a sorted set scored by
its expiry time, so that `available()` finds live workers without scanning the key space.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import cast

from redis.asyncio import Redis

from facerestore_common.topology import RESTORER_FAMILIES

# What "auto" resolves to, best first: GFPGAN is the platform's main model (the brief's
# "GFPGAN family; CodeFormer as an option"), CodeFormer the alternative when only it runs,
# and the weight-free classical restorer the last resort, which every CPU pod can serve.
AUTO_ORDER: tuple[str, ...] = ("gfpgan", "codeformer", "classical")
AUTO = "auto"


class ModelUnavailable(Exception):
    """No live worker serves the requested model (for "auto": no worker at all)."""

    def __init__(self, model: str) -> None:
        super().__init__(f"no worker that can run {model!r} is available")
        self.model = model


@dataclass(frozen=True)
class ModelOffer:
    family: str  # gfpgan | codeformer | classical
    model_id: str  # e.g. "gfpgan-v1.4", "codeformer-v0.1.0", "classical-opencv-v2"
    version: str
    sha256: str  # of the weights file; "" when there are none
    supports_fidelity: bool
    default_fidelity: float | None
    max_upscale: int

    def __post_init__(self) -> None:
        if self.family not in RESTORER_FAMILIES:
            raise ValueError(f"unknown restorer family {self.family!r}")

    def to_json(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> ModelOffer:
        fidelity = data.get("default_fidelity")
        return cls(
            family=str(data["family"]),
            model_id=str(data["model_id"]),
            version=str(data["version"]),
            sha256=str(data["sha256"]),
            supports_fidelity=bool(data["supports_fidelity"]),
            default_fidelity=None if fidelity is None else float(str(fidelity)),
            max_upscale=int(str(data["max_upscale"])),
        )


class ModelRegistry:
    def __init__(self, redis: Redis, key_prefix: str, ttl_seconds: float = 30.0) -> None:
        if ttl_seconds <= 0:
            raise ValueError("ttl_seconds must be positive")
        self._redis = redis
        self._workers_key = f"{key_prefix}:models:workers"
        self._offers_prefix = f"{key_prefix}:models:worker:"
        self.ttl_seconds = ttl_seconds

    @property
    def announce_interval_seconds(self) -> float:
        """How often a worker announces: two announcements may be lost before it drops out."""
        return self.ttl_seconds / 3

    async def announce(self, worker_id: str, offers: Sequence[ModelOffer], ttl_seconds: float | None = None) -> None:
        """Say that `worker_id` serves `offers` for the next ttl_seconds (the registry's own
        unless given: a worker group that scales to zero keeps a longer standby entry, as KEDA
        starts a worker for it as soon as a message waits)."""
        ttl = self.ttl_seconds if ttl_seconds is None else ttl_seconds
        if ttl <= 0:
            raise ValueError("ttl_seconds must be positive")
        body = json.dumps([offer.to_json() for offer in offers])
        expires_at = time.time() + ttl
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(self._offers_prefix + worker_id, body, px=int(ttl * 1000))
            pipe.zadd(self._workers_key, {worker_id: expires_at})
            # Dead workers' entries go here, so the set never grows beyond the live ones.
            pipe.zremrangebyscore(self._workers_key, "-inf", time.time())
            await pipe.execute()

    async def withdraw(self, worker_id: str) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(self._offers_prefix + worker_id)
            pipe.zrem(self._workers_key, worker_id)
            await pipe.execute()

    async def available(self) -> dict[str, ModelOffer]:
        """Family -> the offer of a live worker. When live workers offer different models of
        one family (during a rollout), the most recent announcement's wins."""
        # Oldest announcement first, so that the newest one is written last and wins.
        live = await self._redis.zrangebyscore(self._workers_key, time.time(), "+inf")
        if not live:
            return {}
        workers = [_text(cast(str | bytes, worker)) for worker in live]
        bodies = await self._redis.mget([self._offers_prefix + worker for worker in workers])
        found: dict[str, ModelOffer] = {}
        for body in bodies:
            if body is None:  # expired between the two reads
                continue
            for data in json.loads(_text(body)):
                offer = ModelOffer.from_json(data)
                found[offer.family] = offer
        return found


def auto_choice(available: Mapping[str, ModelOffer]) -> str | None:
    """What "auto" stands for now: the first family of AUTO_ORDER that a live worker serves."""
    return next((family for family in AUTO_ORDER if family in available), None)


def resolve_model(requested: str, available: Mapping[str, ModelOffer]) -> str:
    """The restorer family to publish for a request: "auto" becomes the best family a live
    worker serves (AUTO_ORDER); a named family must be served. Never a silent substitute:
    raises ModelUnavailable(requested) instead."""
    if requested == AUTO:
        family = auto_choice(available)
        if family is None:
            raise ModelUnavailable(requested)
        return family
    if requested not in RESTORER_FAMILIES:
        raise ValueError(f"unknown model {requested!r}; expected auto or one of {', '.join(RESTORER_FAMILIES)}")
    if requested not in available:
        raise ModelUnavailable(requested)
    return requested


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
