"""Job records: one per accepted upload, keyed by the image id.

Each job is also its own outbox entry: it carries the id and trace context of its
`image.uploaded` event and whether the broker has confirmed it, so an event that could
not be published when the upload was accepted is published later by the relay."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from motor.motor_asyncio import AsyncIOMotorDatabase
from pymongo import ReturnDocument

from facerestore_common.timeutil import now_ms


@dataclass(frozen=True)
class Job:
    image_id: str
    user_id: str
    original_key: str
    content_type: str
    width: int
    height: int
    size_bytes: int
    sha256: str
    tags: list[str]
    note: str
    location: str
    created_at_ms: int
    event_id: str = ""
    traceparent: str = ""
    published: bool = False
    publish_attempts: int = 0
    next_publish_at_ms: int = 0
    status: str = field(default="queued")
    # How the first version ("r1") is to be restored (restoration_options.to_document); empty on
    # jobs recorded before options existed.
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_document(cls, doc: dict[str, Any]) -> Job:
        fields = {name: doc[name] for name in cls.__dataclass_fields__ if name in doc and name != "image_id"}
        fields["published"] = bool(fields.get("published", False))
        return cls(image_id=doc["_id"], **fields)


class JobRepository:
    def __init__(self, database: AsyncIOMotorDatabase) -> None:
        self._jobs = database["jobs"]

    async def create_indexes(self) -> None:
        await self._jobs.create_index([("user_id", 1), ("created_at_ms", -1)])
        await self._jobs.create_index([("published", 1), ("next_publish_at_ms", 1)])

    async def insert(self, job: Job) -> None:
        doc = asdict(job)
        doc["_id"] = doc.pop("image_id")
        await self._jobs.insert_one(doc)

    async def get(self, image_id: str) -> Job | None:
        doc = await self._jobs.find_one({"_id": image_id})
        return Job.from_document(doc) if doc else None

    async def delete(self, image_id: str) -> None:
        await self._jobs.delete_one({"_id": image_id})

    async def allocate_restoration(self, image_id: str, user_id: str) -> str | None:
        """The next version id of the user's image ("r2", "r3", ...), counted in one atomic
        update; None when the user has no such image."""
        doc = await self._jobs.find_one_and_update(
            {"_id": image_id, "user_id": user_id},
            {"$inc": {"extra_restorations": 1}},
            projection={"extra_restorations": 1},
            return_document=ReturnDocument.AFTER,
        )
        return None if doc is None else f"r{int(doc['extra_restorations']) + 1}"

    async def mark_published(self, image_id: str) -> None:
        await self._jobs.update_one(
            {"_id": image_id},
            {"$set": {"published": True, "published_at_ms": now_ms()}, "$inc": {"publish_attempts": 1}},
        )

    async def postpone(self, image_id: str, delay_ms: int) -> None:
        await self._jobs.update_one(
            {"_id": image_id}, {"$set": {"next_publish_at_ms": now_ms() + delay_ms}, "$inc": {"publish_attempts": 1}}
        )

    async def backlog(self) -> tuple[int, int | None]:
        """How many accepted uploads wait for their event to be confirmed, and the oldest one's time."""
        waiting = await self._jobs.count_documents({"published": False})
        oldest = (
            await self._jobs.find({"published": False}, {"created_at_ms": 1})
            .sort("next_publish_at_ms", 1)
            .limit(1)
            .to_list(None)
        )
        return waiting, (int(oldest[0]["created_at_ms"]) if oldest else None)

    async def due_for_publishing(self, limit: int) -> list[Job]:
        docs = (
            await self._jobs.find({"published": False, "next_publish_at_ms": {"$lte": now_ms()}})
            .sort("next_publish_at_ms", 1)
            .limit(limit)
            .to_list(None)
        )
        return [Job.from_document(doc) for doc in docs]
