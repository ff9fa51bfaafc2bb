"""Versions of an image: the upload's own restoration ("r1") and every reprocess its owner
asked for ("r2", "r3", ...), kept inside the image's item document as `restorations.<id>`.

Each version advances like the item does (queued < processing < done/failed, never back), by
the events that name it (`restoration_id`; an empty one is "r1"). The item's own status,
result files and quality are those of its preferred version ("r1" until its owner chooses
another done one), so everything that reads the item (lists, links, exports, search results,
feedback) shows the preferred version. Deleting the item deletes every version's files
(Item.blob_keys).

The faces of an image are the original's, the same whichever version is made: the first
version that finishes stores them and puts them in the face index (`faces_from`); later
versions only add their identity similarity per face."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pymongo import ReturnDocument

from facerestore_common.timeutil import now_ms
from history_service.faces import FaceRepository
from history_service.tracked_items import TrackedItems

FIRST_RESTORATION = "r1"
_RESTORATION_ID = re.compile(r"^r[1-9][0-9]{0,5}$")
_RANK = {"queued": 1, "processing": 2, "done": 3, "failed": 3}


def is_restoration_id(value: str) -> bool:
    return _RESTORATION_ID.fullmatch(value) is not None


def restoration_number(restoration_id: str) -> int:
    return int(restoration_id[1:]) if is_restoration_id(restoration_id) else 0


# Slots: a page of images builds a few of these per image, and a frozen dataclass with slots is
# built in half the time of one without.
@dataclass(frozen=True, slots=True)
class Version:
    id: str
    status: str
    created_at_ms: int
    updated_at_ms: int
    # restoration_options.to_document; empty for versions made before options existed.
    options: dict[str, Any] = field(default_factory=dict)
    restored_key: str = ""
    original_thumbnail_key: str = ""
    restored_thumbnail_key: str = ""
    faces: int = 0
    quality: dict[str, Any] = field(default_factory=dict)
    # Cosine similarity of each face before and after this version's restoration, in face order.
    face_identity: list[float] = field(default_factory=list)
    error: str = ""

    @classmethod
    def from_entry(cls, entry: Mapping[str, Any]) -> Version:
        return cls(
            id=str(entry["id"]),
            status=str(entry.get("status", "queued")),
            created_at_ms=int(entry.get("created_at_ms", 0)),
            updated_at_ms=int(entry.get("updated_at_ms", 0)),
            options=dict(entry.get("options") or {}),
            restored_key=str(entry.get("restored_key", "")),
            original_thumbnail_key=str(entry.get("original_thumbnail_key", "")),
            restored_thumbnail_key=str(entry.get("restored_thumbnail_key", "")),
            faces=int(entry.get("faces", 0)),
            quality=dict(entry.get("quality") or {}),
            face_identity=[float(value) for value in entry.get("face_identity", [])],
            error=str(entry.get("error", "")),
        )

    def blob_keys(self) -> list[str]:
        return [key for key in (self.restored_key, self.original_thumbnail_key, self.restored_thumbnail_key) if key]

    def item_fields(self) -> dict[str, Any]:
        """What the item shows of it when it is the preferred version (a done one)."""
        return {
            "status": self.status,
            "status_rank": _RANK[self.status],
            "restored_key": self.restored_key,
            "original_thumbnail_key": self.original_thumbnail_key,
            "restored_thumbnail_key": self.restored_thumbnail_key,
            "faces": self.faces,
            "quality": self.quality,
            "error": self.error,
        }


def listed(entries: Mapping[str, Mapping[str, Any]], first: Callable[[], Version]) -> list[Version]:
    """Every version, oldest first. `first()` stands in for "r1" on items projected before
    versions existed (its facts are the item's own); it is called only for those."""
    versions = {key: Version.from_entry(entry) for key, entry in entries.items() if is_restoration_id(key)}
    if FIRST_RESTORATION not in versions:
        versions[FIRST_RESTORATION] = first()
    return sorted(versions.values(), key=lambda version: restoration_number(version.id))


def first_entry(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The "r1" entry of an item projected before versions existed, from the item's own fields."""
    return {
        "id": FIRST_RESTORATION,
        "status": doc.get("status", "queued"),
        "status_rank": int(doc.get("status_rank", 0)),
        "created_at_ms": int(doc.get("created_at_ms", 0)),
        "updated_at_ms": int(doc.get("updated_at_ms", 0)),
        "options": {},
        "restored_key": doc.get("restored_key", ""),
        "original_thumbnail_key": doc.get("original_thumbnail_key", ""),
        "restored_thumbnail_key": doc.get("restored_thumbnail_key", ""),
        "faces": int(doc.get("faces", 0)),
        "quality": dict(doc.get("quality") or {}),
        "error": doc.get("error", ""),
    }


def detected_faces(faces: Sequence[Mapping[str, Any]], preferred: Version | None) -> list[dict[str, Any]]:
    """The image's faces with the preferred version's identity similarity (when it measured the
    same faces; else the one stored with the faces)."""
    identity = preferred.face_identity if preferred is not None and len(preferred.face_identity) == len(faces) else []
    return [
        {
            "index": index,
            "box": [int(value) for value in face.get("box", [])],
            "detection_score": float(face.get("detection_score", 0.0)),
            "identity_similarity": identity[index] if identity else float(face.get("identity_similarity", 0.0)),
        }
        for index, face in enumerate(faces)
    ]


class VersionRepository:
    """The `restorations.<id>` entries of item documents."""

    def __init__(self, items: TrackedItems) -> None:
        self._items = items

    async def describe(self, image_id: str, restoration_id: str, options: dict[str, Any], created_at_ms: int) -> None:
        """Record how a version was asked for, whatever its status (an outcome may come first)."""
        await self._ensure(image_id, restoration_id)
        prefix = f"restorations.{restoration_id}"
        await self._items.update_one(
            {"_id": image_id, "deleted": False, prefix: {"$exists": True}},
            {"$set": {f"{prefix}.options": options, f"{prefix}.created_at_ms": created_at_ms}},
        )

    async def advance(
        self, image_id: str, restoration_id: str, status: str, fields: dict[str, Any]
    ) -> dict[str, Any] | None:
        """Move the version to `status` if that is forward; returns the item's document, or None
        when the image is unknown or deleted."""
        await self._ensure(image_id, restoration_id)
        prefix = f"restorations.{restoration_id}"
        rank = _RANK[status]
        update = {f"{prefix}.{name}": value for name, value in fields.items()}
        update.update({f"{prefix}.status": status, f"{prefix}.status_rank": rank, f"{prefix}.updated_at_ms": now_ms()})
        await self._items.update_one({"_id": image_id, f"{prefix}.status_rank": {"$lt": rank}}, {"$set": update})
        doc = await self._items.find_one({"_id": image_id})
        return None if doc is None or doc.get("deleted") else doc

    async def claim_faces(self, image_id: str, restoration_id: str, faces: list[dict[str, Any]]) -> bool:
        """Whether this version's faces are the image's: the first version to finish claims
        them (and claims them again when its event is delivered again)."""
        # Two plain updates rather than one with $or, which the MongoDB stand-in (nx-27017)
        # does not apply reliably.
        claimed = await self._items.update_one(
            {"_id": image_id, "deleted": False, "faces_from": {"$exists": False}},
            {"$set": {"faces_from": restoration_id, "detected_faces": faces}},
        )
        if claimed.matched_count == 1:
            return True
        again = await self._items.update_one(
            {"_id": image_id, "deleted": False, "faces_from": restoration_id}, {"$set": {"detected_faces": faces}}
        )
        return again.matched_count == 1

    async def prefer(self, image_id: str, user_id: str, version: Version) -> dict[str, Any] | None:
        """Show this (done) version as the item's; None if the item or the version's done
        state is gone."""
        return await self._items.find_one_and_update(
            {
                "_id": image_id,
                "user_id": user_id,
                "deleted": False,
                f"restorations.{version.id}.status": "done",
            },
            {"$set": {**version.item_fields(), "preferred_restoration": version.id, "updated_at_ms": now_ms()}},
            return_document=ReturnDocument.AFTER,
        )

    async def backfill_detected_faces(self, faces: FaceRepository, batch: int = 100) -> int:
        """Give restored items projected before faces were listed on them their faces (from the
        faces collection, which that result filled); returns how many were given theirs."""
        docs = (
            await self._items.find(
                {"status": "done", "deleted": False, "detected_faces": {"$exists": False}}, {"_id": 1}
            )
            .limit(batch)
            .to_list(None)
        )
        for doc in docs:
            stored = await faces.of_image(doc["_id"])
            listed = [
                {
                    "box": [int(value) for value in face.get("box", [])],
                    "detection_score": float(face.get("detection_score", 0.0)),
                    "identity_similarity": float(face.get("identity_similarity", 0.0)),
                }
                for face in stored
            ]
            await self._items.update_one(
                {"_id": doc["_id"], "detected_faces": {"$exists": False}}, {"$set": {"detected_faces": listed}}
            )
            await self._items.update_one(
                {"_id": doc["_id"], "faces_from": {"$exists": False}}, {"$set": {"faces_from": FIRST_RESTORATION}}
            )
        return len(docs)

    async def _ensure(self, image_id: str, restoration_id: str) -> None:
        if restoration_id != FIRST_RESTORATION:
            await self._keep_first(image_id)
        await self._items.update_one(
            {"_id": image_id, "deleted": False, f"restorations.{restoration_id}": {"$exists": False}},
            {
                "$set": {
                    f"restorations.{restoration_id}": {
                        "id": restoration_id,
                        "status": "queued",
                        "status_rank": 0,
                        "created_at_ms": now_ms(),
                    }
                }
            },
        )

    async def _keep_first(self, image_id: str) -> None:
        """Give an item projected before versions existed its "r1" entry, from its own fields,
        before another version is added (the item's fields may become another version's).
        Its faces, if it has a result, were stored by that result."""
        doc = await self._items.find_one({"_id": image_id, "deleted": False})
        if doc is None or FIRST_RESTORATION in (doc.get("restorations") or {}):
            return
        update: dict[str, Any] = {f"restorations.{FIRST_RESTORATION}": first_entry(doc)}
        if doc.get("status") == "done" and "faces_from" not in doc:
            update["faces_from"] = FIRST_RESTORATION
        await self._items.update_one(
            {"_id": image_id, f"restorations.{FIRST_RESTORATION}": {"$exists": False}}, {"$set": update}
        )
