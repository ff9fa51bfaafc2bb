"""History items in MongoDB: one document per image, advanced by events.

Status only moves forward (queued < processing < done/failed), so events that arrive
twice or out of order cannot move an item back. A deleted item stays as a tombstone
so that a late event cannot bring it back."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any

from pymongo import ReturnDocument

from facerestore_common.timeutil import now_ms
from history_service.tracked_items import TrackedItems
from history_service.versions import FIRST_RESTORATION, Version, VersionRepository, listed

STATUS_RANK = {"queued": 1, "processing": 2, "done": 3, "failed": 3}


# Slots: a page of images builds one per image, and a frozen dataclass with slots is built in
# half the time of one without.
@dataclass(frozen=True, slots=True)
class Item:
    id: str
    user_id: str
    status: str
    created_at_ms: int
    updated_at_ms: int
    sort_key: str
    tags: list[str] = field(default_factory=list)
    note: str = ""
    location: str = ""
    width: int = 0
    height: int = 0
    faces: int = 0
    error: str = ""
    quality: dict[str, Any] = field(default_factory=dict)
    original_key: str = ""
    restored_key: str = ""
    original_thumbnail_key: str = ""
    restored_thumbnail_key: str = ""
    # Hidden by an admin pending review (moderation.py); reports made by its owner.
    under_review: bool = False
    reports: int = 0
    # The owner's rating of the result: {"rating": 1..5, "comment", "given_at_ms"} (library.py).
    feedback: dict[str, Any] = field(default_factory=dict)
    # Every version by id (versions.py); the item's own result fields are the preferred one's.
    restorations: dict[str, dict[str, Any]] = field(default_factory=dict)
    preferred_restoration: str = FIRST_RESTORATION
    # The original's faces, [{"box", "detection_score", "identity_similarity"}], in face order.
    detected_faces: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_document(cls, doc: dict[str, Any]) -> Item:
        return cls(
            id=doc["_id"],
            user_id=doc["user_id"],
            status=doc.get("status", "queued"),
            created_at_ms=doc.get("created_at_ms", 0),
            updated_at_ms=doc.get("updated_at_ms", 0),
            sort_key=doc.get("sort_key", ""),
            tags=list(doc.get("tags", [])),
            note=doc.get("note", ""),
            location=doc.get("location", ""),
            width=doc.get("width", 0),
            height=doc.get("height", 0),
            faces=doc.get("faces", 0),
            error=doc.get("error", ""),
            quality=dict(doc.get("quality") or {}),
            original_key=doc.get("original_key", ""),
            restored_key=doc.get("restored_key", ""),
            original_thumbnail_key=doc.get("original_thumbnail_key", ""),
            restored_thumbnail_key=doc.get("restored_thumbnail_key", ""),
            under_review=bool(doc.get("under_review", False)),
            reports=int(doc.get("reports", 0)),
            feedback=dict(doc.get("feedback") or {}),
            restorations={str(key): dict(entry) for key, entry in (doc.get("restorations") or {}).items()},
            preferred_restoration=str(doc.get("preferred_restoration") or FIRST_RESTORATION),
            detected_faces=[dict(face) for face in doc.get("detected_faces") or []],
        )

    def blob_keys(self) -> list[str]:
        """Every file of the image: the original and every version's results."""
        keys = [self.original_key, self.restored_key, self.original_thumbnail_key, self.restored_thumbnail_key]
        for version in self.versions:
            keys.extend(version.blob_keys())
        return [key for key in dict.fromkeys(keys) if key]

    @property
    def versions(self) -> list[Version]:
        """Every version, oldest first (an item from before versions existed has its "r1")."""
        return listed(self.restorations, self._own_version)

    def _own_version(self) -> Version:
        """The "r1" of an item from before versions existed: the item's own facts."""
        return Version(
            id=FIRST_RESTORATION,
            status=self.status,
            created_at_ms=self.created_at_ms,
            updated_at_ms=self.updated_at_ms,
            restored_key=self.restored_key,
            original_thumbnail_key=self.original_thumbnail_key,
            restored_thumbnail_key=self.restored_thumbnail_key,
            faces=self.faces,
            quality=self.quality,
            error=self.error,
        )

    def version(self, restoration_id: str) -> Version | None:
        return next((version for version in self.versions if version.id == restoration_id), None)


def sort_key(created_at_ms: int, image_id: str) -> str:
    return f"{created_at_ms:013d}-{image_id}"


class ItemRepository:
    def __init__(self, items: TrackedItems) -> None:
        self._items = items
        self.versions = VersionRepository(items)

    @property
    def collection(self) -> TrackedItems:
        """The collection itself, for the modules that write to it directly (library, erase)."""
        return self._items

    async def create_indexes(self) -> None:
        await self._items.create_index([("user_id", 1), ("sort_key", -1)])
        await self._items.create_index("sort_key")
        await self._items.create_index("status")

    async def record_upload(self, image_id: str, user_id: str, facts: dict[str, Any]) -> None:
        await self._items.update_one(
            {"_id": image_id},
            {"$set": {"user_id": user_id, **facts}, "$setOnInsert": {"status_rank": 0, "deleted": False}},
            upsert=True,
        )

    async def advance(self, image_id: str, user_id: str, status: str, fields: dict[str, Any]) -> Item | None:
        """Move the item to `status` if that is forward; returns the item (or None if tombstoned)."""
        rank = STATUS_RANK[status]
        await self._items.update_one(
            {"_id": image_id},
            {"$setOnInsert": {"user_id": user_id, "status_rank": 0, "deleted": False}},
            upsert=True,
        )
        await self._items.update_one(
            {"_id": image_id, "status_rank": {"$lt": rank}},
            {"$set": {"status": status, "status_rank": rank, "updated_at_ms": now_ms(), **fields}},
        )
        doc = await self._items.find_one({"_id": image_id})
        if doc is None or doc.get("deleted"):
            return None
        return Item.from_document(doc)

    async def is_deleted(self, image_id: str) -> bool:
        doc = await self._items.find_one({"_id": image_id}, {"deleted": 1})
        return bool(doc and doc.get("deleted"))

    async def get(self, image_id: str) -> Item | None:
        doc = await self._items.find_one({"_id": image_id, "deleted": False})
        if doc is None or "sort_key" not in doc:
            return None
        return Item.from_document(doc)

    async def get_many(self, image_ids: Iterable[str]) -> dict[str, Item]:
        """The visible items among image_ids (deleted and unknown ones are left out)."""
        ids = list(dict.fromkeys(image_ids))
        if not ids:
            return {}
        docs = await self._items.find({"_id": {"$in": ids}, "deleted": False}).to_list(None)
        return {doc["_id"]: Item.from_document(doc) for doc in docs if "sort_key" in doc}

    async def scan_done(self, batch_size: int) -> AsyncIterator[list[Item]]:
        """Every visible restored item, in batches (for re-embedding)."""
        batch: list[Item] = []
        async for doc in self._items.find({"deleted": False, "status": "done"}).sort("_id", 1):
            if "sort_key" not in doc:
                continue
            batch.append(Item.from_document(doc))
            if len(batch) >= batch_size:
                yield batch
                batch = []
        if batch:
            yield batch

    async def list(self, limit: int, cursor: str, user_id: str | None) -> tuple[list[Item], str]:
        query: dict[str, Any] = {"deleted": False, "sort_key": {"$gt": ""}}
        if user_id is not None:
            query["user_id"] = user_id
        if cursor:
            query["sort_key"] = {"$lt": cursor}
        docs = await self._items.find(query).sort("sort_key", -1).limit(limit + 1).to_list(None)
        items = [Item.from_document(doc) for doc in docs[:limit]]
        return items, (items[-1].sort_key if len(docs) > limit else "")

    async def tombstone(self, image_id: str, deleted_by: str) -> Item | None:
        doc = await self._items.find_one_and_update(
            {"_id": image_id, "deleted": False},
            {"$set": {"deleted": True, "deleted_by": deleted_by, "deleted_at_ms": now_ms(), "purge_pending": True}},
            return_document=ReturnDocument.BEFORE,
        )
        return Item.from_document(doc) if doc else None

    async def record_freed_bytes(self, image_id: str, measured: int) -> int:
        """Keep the first measure of a tombstone's files and return it: a purge run again after
        its files went measures nothing, yet announces what the first one found."""
        doc = await self._items.find_one_and_update(
            {"_id": image_id, "freed_bytes": {"$exists": False}},
            {"$set": {"freed_bytes": measured}},
            return_document=ReturnDocument.AFTER,
        )
        if doc is None:
            doc = await self._items.find_one({"_id": image_id}, {"freed_bytes": 1})
        return int((doc or {}).get("freed_bytes") or 0)

    async def purged(self, image_id: str) -> None:
        """Clear a tombstone's `purge_pending` mark once its files are gone and its deletion announced."""
        await self._items.update_one({"_id": image_id}, {"$unset": {"purge_pending": ""}})

    async def set_under_review(self, image_id: str, hidden: bool, reason: str) -> Item | None:
        """Hide a visible item pending review, or show it again; None when there is no such item."""
        await self._items.update_one(
            {"_id": image_id, "deleted": False},
            {"$set": {"under_review": hidden, "review_reason": reason, "review_changed_at_ms": now_ms()}},
        )
        return await self.get(image_id)

    async def add_report(self, image_id: str) -> None:
        await self._items.update_one({"_id": image_id, "deleted": False}, {"$inc": {"reports": 1}})

    async def stats(self) -> dict[str, Any]:
        by_status: dict[str, int] = {}
        faces_total = 0
        gains: list[float] = []
        durations: list[float] = []
        async for doc in self._items.find(
            {"deleted": False, "sort_key": {"$gt": ""}}, {"status": 1, "faces": 1, "quality": 1}
        ):
            status = doc.get("status", "queued")
            by_status[status] = by_status.get(status, 0) + 1
            faces_total += int(doc.get("faces", 0))
            quality = doc.get("quality") or {}
            if "sharpness_gain" in quality:
                gains.append(float(quality["sharpness_gain"]))
            if "duration_ms" in quality:
                durations.append(float(quality["duration_ms"]))
        return {
            "images_total": sum(by_status.values()),
            "images_by_status": by_status,
            "faces_total": faces_total,
            "mean_sharpness_gain": sum(gains) / len(gains) if gains else 0.0,
            "mean_duration_ms": sum(durations) / len(durations) if durations else 0.0,
        }
