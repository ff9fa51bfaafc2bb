"""Each user's activity, newest first: sign-ups and sign-ins, uploads and the later versions
they asked for, deletions, searches, reports and ratings, bans and role changes, as the
services reported them (one entry per event, keyed by the event id, so a redelivery adds
nothing)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from motor.motor_asyncio import AsyncIOMotorDatabase
from pymongo.errors import DuplicateKeyError

# What a user's activity shows (code requests and refusals are counted in the statistics only).
TIMELINE_KINDS = frozenset(
    {
        "user.signed_up",
        "user.signed_in",
        "user.role_changed",
        "user.banned",
        "user.unbanned",
        "image.uploaded",
        "restoration.requested",
        "image.deleted",
        "image.reported",
        "search.made",
        "feedback.given",
    }
)


@dataclass(frozen=True)
class TimelineEntry:
    id: str
    kind: str
    at_ms: int
    details: dict[str, str]


def _cursor(at_ms: int, entry_id: str) -> str:
    return f"{at_ms:013d}-{entry_id}"


class Timeline:
    def __init__(self, database: AsyncIOMotorDatabase) -> None:
        self._entries = database["user_activity"]

    async def create_indexes(self) -> None:
        await self._entries.create_index([("user_id", 1), ("sort_key", -1)])

    async def add(self, event_id: str, user_id: str, kind: str, at_ms: int, details: Mapping[str, str]) -> None:
        if not user_id or kind not in TIMELINE_KINDS:
            return
        try:
            await self._entries.insert_one(
                {
                    "_id": event_id,
                    "user_id": user_id,
                    "kind": kind,
                    "at_ms": at_ms,
                    "sort_key": _cursor(at_ms, event_id),
                    "details": {key: str(value) for key, value in details.items()},
                }
            )
        except DuplicateKeyError:
            pass

    async def page(self, user_id: str, limit: int, cursor: str) -> tuple[list[TimelineEntry], str]:
        query: dict[str, object] = {"user_id": user_id}
        if cursor:
            query["sort_key"] = {"$lt": cursor}
        docs = await self._entries.find(query).sort("sort_key", -1).limit(limit + 1).to_list(None)
        entries = [
            TimelineEntry(doc["_id"], doc["kind"], int(doc["at_ms"]), dict(doc.get("details") or {}))
            for doc in docs[:limit]
        ]
        return entries, (_cursor(entries[-1].at_ms, entries[-1].id) if len(docs) > limit else "")

    async def counts(self, user_id: str) -> dict[str, int]:
        """All-time entries by kind."""
        counts: dict[str, int] = {}
        async for group in self._entries.aggregate(
            [{"$match": {"user_id": user_id}}, {"$group": {"_id": "$kind", "n": {"$sum": 1}}}]
        ):
            counts[str(group["_id"])] = int(group.get("n") or 0)
        return counts

    async def forget_user(self, user_id: str) -> None:
        await self._entries.delete_many({"user_id": user_id})
