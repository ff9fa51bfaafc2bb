"""Model performance: one document per image with what its restoration measured (from
`image.uploaded`, `image.restored`, `image.failed`, `feedback.given`), summarised per restorer
and per analyser model over the images that finished in a period.

Each event sets its own fields, so they may arrive in any order and more than once. The summary
reads the period's documents (a projection of a few numbers each); percentiles are exact."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from motor.motor_asyncio import AsyncIOMotorDatabase

from admin_service.distribution import Summary


@dataclass(frozen=True)
class ModelSummary:
    model: str
    done: int
    failed: int
    failures_by_reason: dict[str, int]
    duration_ms: Summary
    stage_ms: dict[str, Summary]
    faces_per_image: Summary
    identity_similarity: Summary
    sharpness_gain: Summary
    ratings: int
    mean_rating: float

    @property
    def images(self) -> int:
        return self.done + self.failed

    @property
    def failure_rate(self) -> float:
        return self.failed / self.images if self.images else 0.0


@dataclass
class _Values:
    done: int = 0
    failed: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    durations: list[float] = field(default_factory=list)
    stages: defaultdict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    faces: list[float] = field(default_factory=list)
    identity: list[float] = field(default_factory=list)
    gains: list[float] = field(default_factory=list)
    ratings: list[float] = field(default_factory=list)

    def add(self, doc: dict[str, Any]) -> None:
        if doc.get("rating"):
            self.ratings.append(float(doc["rating"]))
        if doc.get("status") == "failed":
            self.failed += 1
            self.reasons[reason_kind(str(doc.get("failure_reason", "")))] += 1
            return
        self.done += 1
        self.durations.append(float(doc.get("duration_ms", 0.0)))
        for stage, ms in (doc.get("stage_ms") or {}).items():
            self.stages[stage].append(float(ms))
        faces = int(doc.get("faces", 0))
        self.faces.append(float(faces))
        if faces:
            self.identity.append(float(doc.get("identity_min", 0.0)))
        self.gains.append(float(doc.get("sharpness_gain", 0.0)))

    def summary(self, model: str) -> ModelSummary:
        return ModelSummary(
            model=model,
            done=self.done,
            failed=self.failed,
            failures_by_reason=dict(self.reasons),
            duration_ms=Summary.of(self.durations),
            stage_ms={stage: Summary.of(values) for stage, values in sorted(self.stages.items())},
            faces_per_image=Summary.of(self.faces),
            identity_similarity=Summary.of(self.identity),
            sharpness_gain=Summary.of(self.gains),
            ratings=len(self.ratings),
            mean_rating=sum(self.ratings) / len(self.ratings) if self.ratings else 0.0,
        )


def reason_kind(reason: str) -> str:
    """ "retries_exhausted: S3Error" -> "retries_exhausted": the kind, without the detail."""
    return reason.partition(":")[0].strip() or "unknown"


def summarise(docs: Iterable[dict[str, Any]], model_field: str) -> list[ModelSummary]:
    per_model: defaultdict[str, _Values] = defaultdict(_Values)
    for doc in docs:
        per_model[str(doc.get(model_field) or "unknown")].add(doc)
    return [values.summary(model) for model, values in sorted(per_model.items())]


class ModelResults:
    def __init__(self, database: AsyncIOMotorDatabase) -> None:
        self._results = database["results"]

    async def create_indexes(self) -> None:
        await self._results.create_index("finished_at_ms")
        await self._results.create_index("user_id")

    async def _set(self, image_id: str, fields: dict[str, Any]) -> None:
        # `deleted` exists from the start: the stand-in matches no missing field with $ne in updates.
        await self._results.update_one(
            {"_id": image_id}, {"$set": fields, "$setOnInsert": {"deleted": False, "rated_at_ms": 0}}, upsert=True
        )

    async def uploaded(self, image_id: str, user_id: str, at_ms: int, original_bytes: int) -> None:
        await self._set(image_id, {"user_id": user_id, "uploaded_at_ms": at_ms, "original_bytes": original_bytes})

    async def restored(self, image_id: str, user_id: str, at_ms: int, measured: dict[str, Any]) -> None:
        await self._set(image_id, {"user_id": user_id, "status": "done", "finished_at_ms": at_ms, **measured})

    async def failed(self, image_id: str, user_id: str, at_ms: int, measured: dict[str, Any]) -> None:
        await self._set(image_id, {"user_id": user_id, "status": "failed", "finished_at_ms": at_ms, **measured})

    async def rated(self, image_id: str, rating: int, at_ms: int) -> None:
        """The owner's latest rating (a later one replaces it, whatever order the events come in)."""
        await self._results.update_one(
            {"_id": image_id}, {"$setOnInsert": {"deleted": False, "rated_at_ms": 0}}, upsert=True
        )
        await self._results.update_one(
            {"_id": image_id, "rated_at_ms": {"$lt": at_ms}}, {"$set": {"rating": rating, "rated_at_ms": at_ms}}
        )

    async def deleted(self, image_id: str) -> int:
        """Mark the image deleted; returns the bytes it took in storage (0 if already counted)."""
        doc = await self._results.find_one_and_update({"_id": image_id, "deleted": False}, {"$set": {"deleted": True}})
        if doc is None:
            return 0
        return int(doc.get("original_bytes", 0)) + int(doc.get("result_bytes", 0))

    async def forget_user(self, user_id: str) -> None:
        await self._results.update_many({"user_id": user_id}, {"$set": {"user_id": ""}})

    async def summaries(self, from_ms: int, to_ms: int) -> tuple[list[ModelSummary], list[ModelSummary]]:
        """Per restorer model and per analyser model, over the images finished in [from_ms, to_ms)."""
        projection = {
            name: 1
            for name in (
                "status",
                "restorer_model",
                "analyzer_model",
                "failure_reason",
                "duration_ms",
                "stage_ms",
                "faces",
                "identity_min",
                "sharpness_gain",
                "rating",
            )
        }
        docs = await self._results.find({"finished_at_ms": {"$gte": from_ms, "$lt": to_ms}}, projection).to_list(None)
        return summarise(docs, "restorer_model"), summarise(docs, "analyzer_model")
