"""The moderation queue: one case per image that its owner reported or rated low. A case opens
with its first report or low rating (and opens again with a later one), stays open while the
image is hidden pending review, and is resolved when an admin shows the image again, deletes it
or dismisses the case; every decision keeps its reason (and is in the audit log).

Reports are kept one document each (keyed by event id), and a case's counts are recounted from
them, so a redelivered event changes nothing."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from motor.motor_asyncio import AsyncIOMotorDatabase
from pymongo.errors import DuplicateKeyError

from facerestore_common.timeutil import now_ms

OPEN = "open"
RESOLVED = "resolved"
# A rating at or below this opens a case.
LOW_RATING = 2


@dataclass(frozen=True)
class Case:
    image_id: str
    user_id: str
    status: str
    reports: int
    report_reasons: dict[str, int]
    low_ratings: int
    lowest_rating: int
    hidden: bool
    opened_at_ms: int
    updated_at_ms: int
    resolution: str = ""
    resolution_reason: str = ""
    resolved_by: str = ""
    sort_key: str = field(default="", repr=False)

    @classmethod
    def from_document(cls, doc: dict[str, Any]) -> Case:
        return cls(
            image_id=doc["_id"],
            user_id=doc.get("user_id", ""),
            status=doc.get("status", OPEN),
            reports=int(doc.get("reports", 0)),
            report_reasons={str(k): int(v) for k, v in (doc.get("report_reasons") or {}).items()},
            low_ratings=int(doc.get("low_ratings", 0)),
            lowest_rating=int(doc.get("lowest_rating", 0)),
            hidden=bool(doc.get("hidden", False)),
            opened_at_ms=int(doc.get("opened_at_ms", 0)),
            updated_at_ms=int(doc.get("updated_at_ms", 0)),
            resolution=doc.get("resolution", ""),
            resolution_reason=doc.get("resolution_reason", ""),
            resolved_by=doc.get("resolved_by", ""),
            sort_key=doc.get("sort_key", ""),
        )


class ModerationQueue:
    def __init__(self, database: AsyncIOMotorDatabase) -> None:
        self._cases = database["moderation_cases"]
        self._signals = database["moderation_signals"]

    async def create_indexes(self) -> None:
        await self._cases.create_index([("status", 1), ("sort_key", 1)])
        await self._signals.create_index("image_id")

    async def reported(self, event_id: str, image_id: str, user_id: str, reason: str, at_ms: int) -> None:
        await self._signal(event_id, image_id, user_id, at_ms, {"kind": "report", "reason": reason})

    async def rated(self, event_id: str, image_id: str, user_id: str, rating: int, at_ms: int) -> None:
        if rating <= LOW_RATING:
            await self._signal(event_id, image_id, user_id, at_ms, {"kind": "rating", "rating": rating})

    async def _signal(self, event_id: str, image_id: str, user_id: str, at_ms: int, what: dict[str, Any]) -> None:
        try:
            await self._signals.insert_one({"_id": event_id, "image_id": image_id, "at_ms": at_ms, **what})
        except DuplicateKeyError:
            return
        signals = await self._signals.find({"image_id": image_id}).to_list(None)
        reasons: dict[str, int] = {}
        for signal in signals:
            if signal["kind"] == "report":
                reasons[signal["reason"]] = reasons.get(signal["reason"], 0) + 1
        ratings = [int(signal["rating"]) for signal in signals if signal["kind"] == "rating"]
        now = now_ms()
        existing = await self._cases.find_one({"_id": image_id})
        reopen = existing is None or existing.get("status") != OPEN
        fields: dict[str, Any] = {
            "user_id": user_id,
            "reports": sum(reasons.values()),
            "report_reasons": reasons,
            "low_ratings": len(ratings),
            "lowest_rating": min(ratings, default=0),
            "updated_at_ms": now,
        }
        if reopen:
            fields.update(status=OPEN, opened_at_ms=at_ms, sort_key=f"{at_ms:013d}-{image_id}")
        await self._cases.update_one(
            {"_id": image_id}, {"$set": fields, "$setOnInsert": {"hidden": False}}, upsert=True
        )

    async def decide(self, image_id: str, owner_id: str, resolution: str, reason: str, admin_id: str) -> None:
        """Record an admin's decision: "hidden" keeps the case open; "shown", "deleted" and
        "dismissed" resolve it. An image without a case gets one, so that every decision is listed."""
        now = now_ms()
        fields: dict[str, Any] = {
            "resolution": resolution,
            "resolution_reason": reason,
            "resolved_by": admin_id,
            "updated_at_ms": now,
            "hidden": resolution == "hidden",
            "status": OPEN if resolution == "hidden" else RESOLVED,
        }
        if owner_id:
            fields["user_id"] = owner_id
        await self._cases.update_one(
            {"_id": image_id},
            {"$set": fields, "$setOnInsert": {"opened_at_ms": now, "sort_key": f"{now:013d}-{image_id}"}},
            upsert=True,
        )

    async def owner(self, image_id: str) -> str:
        doc = await self._cases.find_one({"_id": image_id}, {"user_id": 1})
        return str(doc.get("user_id", "")) if doc else ""

    async def page(self, status: str, limit: int, cursor: str) -> tuple[list[Case], str]:
        """Cases oldest first (the longest waiting on top); status "open", "resolved" or "all"."""
        query: dict[str, Any] = {} if status == "all" else {"status": status}
        if cursor:
            query["sort_key"] = {"$gt": cursor}
        docs = await self._cases.find(query).sort("sort_key", 1).limit(limit + 1).to_list(None)
        cases = [Case.from_document(doc) for doc in docs[:limit]]
        return cases, (cases[-1].sort_key if len(docs) > limit else "")

    async def forget_user(self, user_id: str) -> None:
        await self._cases.update_many({"user_id": user_id}, {"$set": {"user_id": ""}})
