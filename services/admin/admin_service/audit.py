"""The audit log: who did what to which object, and why. Read newest first, filtered by actor,
action, target and time, in pages."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from motor.motor_asyncio import AsyncIOMotorDatabase

from facerestore_common.timeutil import now_ms


@dataclass(frozen=True)
class AuditEntry:
    id: str
    actor_id: str
    action: str
    target: str
    details: dict[str, Any]
    at_ms: int


@dataclass(frozen=True)
class AuditFilter:
    actor_id: str = ""
    action: str = ""
    target: str = ""
    from_ms: int | None = None
    to_ms: int | None = None

    def query(self) -> dict[str, Any]:
        query: dict[str, Any] = {}
        for name in ("actor_id", "action", "target"):
            if getattr(self, name):
                query[name] = getattr(self, name)
        period: dict[str, int] = {}
        if self.from_ms is not None:
            period["$gte"] = self.from_ms
        if self.to_ms is not None:
            period["$lt"] = self.to_ms
        if period:
            query["at_ms"] = period
        return query


def _sort_key(at_ms: int, entry_id: str) -> str:
    return f"{at_ms:013d}-{entry_id}"


# Entries written within one millisecond keep their order: ids start with this process's count.
_SEQUENCE = itertools.count()


def _new_entry_id() -> str:
    return f"{next(_SEQUENCE) % 10**12:012d}{uuid.uuid4().hex[:20]}"


class AuditLog:
    def __init__(self, database: AsyncIOMotorDatabase) -> None:
        self._entries = database["audit_log"]

    async def create_indexes(self) -> None:
        await self._entries.create_index("at_ms")
        await self._entries.create_index("sort_key")
        await self._entries.create_index([("actor_id", 1), ("sort_key", -1)])
        await self._entries.create_index([("target", 1), ("sort_key", -1)])
        await self._entries.create_index([("action", 1), ("sort_key", -1)])
        # Entries written before the log could be read page by page get their sort key once.
        async for doc in self._entries.find({"sort_key": {"$exists": False}}, {"at_ms": 1}):
            await self._entries.update_one(
                {"_id": doc["_id"]}, {"$set": {"sort_key": _sort_key(int(doc.get("at_ms", 0)), doc["_id"])}}
            )

    async def record(self, actor_id: str, action: str, target: str, **details: object) -> None:
        entry_id = _new_entry_id()
        at_ms = now_ms()
        await self._entries.insert_one(
            {
                "_id": entry_id,
                "actor_id": actor_id,
                "action": action,
                "target": target,
                "details": details,
                "at_ms": at_ms,
                "sort_key": _sort_key(at_ms, entry_id),
            }
        )

    async def count(self, excluding: Sequence[str] = ()) -> int:
        """Entries, leaving out those of the `excluding` actions."""
        query = {"action": {"$nin": list(excluding)}} if excluding else {}
        return await self._entries.count_documents(query)

    async def page(self, where: AuditFilter, limit: int, cursor: str) -> tuple[list[AuditEntry], str]:
        """Newest first; `cursor` is the previous page's next_cursor."""
        query = where.query()
        if cursor:
            query["sort_key"] = {"$lt": cursor}
        docs = await self._entries.find(query).sort("sort_key", -1).limit(limit + 1).to_list(None)
        entries = [
            AuditEntry(
                id=doc["_id"],
                actor_id=doc.get("actor_id", ""),
                action=doc.get("action", ""),
                target=doc.get("target", ""),
                details=dict(doc.get("details") or {}),
                at_ms=int(doc.get("at_ms", 0)),
            )
            for doc in docs[:limit]
        ]
        next_cursor = _sort_key(entries[-1].at_ms, entries[-1].id) if len(docs) > limit else ""
        return entries, next_cursor
