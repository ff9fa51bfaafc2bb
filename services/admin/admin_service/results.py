"""Model performance: one document per restoration with what it measured (from
`image.uploaded`, `restoration.requested`, `image.restored`, `image.failed`, `feedback.given`),
summarised per restorer and per analyser model over the restorations that finished in a period.

An image's first restoration ("r1") has the document keyed by the image's id (as before
versions existed, so older documents read the same); a later version's is keyed
"<image_id>/<restoration_id>". Every version counts once for the model that made it. The
image's rating lives on its first document with the models the rating names (those of the
version the image showed when it was rated), and counts for them.

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
        made_by = str(doc.get(model_field) or "unknown")
        per_model[made_by].add(doc)
        if doc.get("rating"):
            # Ratings recorded before they named their models count for the document's own.
            rated = str(doc.get(f"rated_{model_field}") or made_by)
            per_model[rated].ratings.append(float(doc["rating"]))
    return [values.summary(model) for model, values in sorted(per_model.items())]


FIRST_RESTORATION = "r1"


def result_key(image_id: str, restoration_id: str) -> str:
    """The document of one restoration: the image's id for the first (events published before
    versions existed carry no restoration id), "<image_id>/<restoration_id>" for a later one."""
    if restoration_id in ("", FIRST_RESTORATION):
        return image_id
    return f"{image_id}/{restoration_id}"


@dataclass(frozen=True)
class Restoration:
    """Which restoration an event is about."""

    image_id: str
    restoration_id: str = ""

    @property
    def key(self) -> str:
        return result_key(self.image_id, self.restoration_id)

    @property
    def is_first(self) -> bool:
        return self.key == self.image_id


class ModelResults:
    def __init__(self, database: AsyncIOMotorDatabase) -> None:
        self._results = database["results"]

    async def create_indexes(self) -> None:
        await self._results.create_index("finished_at_ms")
        await self._results.create_index("user_id")
        await self._results.create_index("image_id")

    async def _set(self, restoration: Restoration, fields: dict[str, Any]) -> None:
        # `deleted` exists from the start: the stand-in matches no missing field with $ne in updates.
        # A later version first seen after its image was deleted is born deleted.
        deleted = False
        if not restoration.is_first:
            first = await self._results.find_one({"_id": restoration.image_id}, {"deleted": 1})
            deleted = bool(first and first.get("deleted"))
        identity = {"image_id": restoration.image_id, "restoration_id": restoration.restoration_id or FIRST_RESTORATION}
        await self._results.update_one(
            {"_id": restoration.key},
            {"$set": {**identity, **fields}, "$setOnInsert": {"deleted": deleted, "rated_at_ms": 0}},
            upsert=True,
        )

    async def uploaded(self, image_id: str, user_id: str, at_ms: int, original_bytes: int) -> None:
        await self._set(
            Restoration(image_id), {"user_id": user_id, "uploaded_at_ms": at_ms, "original_bytes": original_bytes}
        )

    async def requested(self, restoration: Restoration, user_id: str, at_ms: int) -> None:
        """A later version was asked for: its document exists from now on, so that deleting the
        image marks it too, even before it finishes."""
        await self._set(restoration, {"user_id": user_id, "requested_at_ms": at_ms})

    async def restored(self, restoration: Restoration, user_id: str, at_ms: int, measured: dict[str, Any]) -> None:
        await self._set(restoration, {"user_id": user_id, "status": "done", "finished_at_ms": at_ms, **measured})

    async def failed(self, restoration: Restoration, user_id: str, at_ms: int, measured: dict[str, Any]) -> None:
        await self._set(restoration, {"user_id": user_id, "status": "failed", "finished_at_ms": at_ms, **measured})

    async def rated(self, image_id: str, rating: int, at_ms: int, models: dict[str, str]) -> None:
        """The owner's latest rating (a later one replaces it, whatever order the events come in),
        with the models it names (`rated_restorer_model`, `rated_analyzer_model`)."""
        await self._results.update_one(
            {"_id": image_id},
            {"$setOnInsert": {"image_id": image_id, "deleted": False, "rated_at_ms": 0}},
            upsert=True,
        )
        named = {f"rated_{field}": model for field, model in models.items() if model}
        await self._results.update_one(
            {"_id": image_id, "rated_at_ms": {"$lt": at_ms}},
            {"$set": {"rating": rating, "rated_at_ms": at_ms, **named}},
        )

    async def deleted(self, image_id: str) -> int:
        """Mark every version of the image deleted; returns an estimate of the bytes they took in
        storage, for an `image.deleted` that does not carry history's measure: the original and
        each version's results as written (the original's thumbnail, rewritten by every version,
        counts once per version); 0 for those already counted."""
        freed = 0
        first = await self._results.find_one_and_update(
            {"_id": image_id, "deleted": False}, {"$set": {"deleted": True}}
        )
        if first is not None:
            freed += int(first.get("original_bytes", 0)) + int(first.get("result_bytes", 0))
        later = await self._results.find({"image_id": image_id, "deleted": False}, {"_id": 1}).to_list(None)
        for doc in later:
            marked = await self._results.find_one_and_update(
                {"_id": doc["_id"], "deleted": False}, {"$set": {"deleted": True}}
            )
            if marked is not None:
                freed += int(marked.get("result_bytes", 0))
        return freed

    async def forget_user(self, user_id: str) -> None:
        await self._results.update_many({"user_id": user_id}, {"$set": {"user_id": ""}})

    async def summaries(self, from_ms: int, to_ms: int) -> tuple[list[ModelSummary], list[ModelSummary]]:
        """Per restorer model and per analyser model, over the restorations finished in [from_ms, to_ms)."""
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
                "rated_restorer_model",
                "rated_analyzer_model",
            )
        }
        docs = await self._results.find({"finished_at_ms": {"$gte": from_ms, "$lt": to_ms}}, projection).to_list(None)
        return summarise(docs, "restorer_model"), summarise(docs, "analyzer_model")
