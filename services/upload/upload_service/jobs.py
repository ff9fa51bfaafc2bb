"""Job records: one per accepted upload, keyed by the image id."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from motor.motor_asyncio import AsyncIOMotorDatabase


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


class JobRepository:
    def __init__(self, database: AsyncIOMotorDatabase) -> None:
        self._jobs = database["jobs"]

    async def create_indexes(self) -> None:
        await self._jobs.create_index([("user_id", 1), ("created_at_ms", -1)])

    async def insert(self, job: Job) -> None:
        doc = asdict(job)
        doc["_id"] = doc.pop("image_id")
        await self._jobs.insert_one({**doc, "status": "queued"})

    async def delete(self, image_id: str) -> None:
        await self._jobs.delete_one({"_id": image_id})
