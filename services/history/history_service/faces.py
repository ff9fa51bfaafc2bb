"""Face embeddings of restored images: the truth the face index is built from (and rebuilt
from by `reindex`). Each vector is stored with the model that made it: vectors of different
models are never compared."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from motor.motor_asyncio import AsyncIOMotorDatabase

from facerestore_common.timeutil import now_ms


@dataclass(frozen=True)
class FaceRecord:
    box: Sequence[int]
    detection_score: float
    embedding: Sequence[float]
    # Cosine similarity of the face before and after restoration (0 when not measured).
    identity_similarity: float = 0.0


def face_id(image_id: str, face_index: int) -> str:
    return f"{image_id}:{face_index}"


class FaceRepository:
    def __init__(self, database: AsyncIOMotorDatabase) -> None:
        self._faces = database["faces"]

    async def create_indexes(self) -> None:
        await self._faces.create_index("image_id")
        await self._faces.create_index([("user_id", 1), ("model", 1)])

    async def replace(
        self, image_id: str, user_id: str, model: str, faces: Sequence[FaceRecord]
    ) -> list[dict[str, Any]]:
        """Idempotent: a redelivered event writes the same documents under the same ids.
        Returns the documents written."""
        await self._faces.delete_many({"image_id": image_id})
        documents = [
            {
                "_id": face_id(image_id, index),
                "image_id": image_id,
                "face_index": index,
                "user_id": user_id,
                "model": model,
                "box": [int(value) for value in face.box],
                "detection_score": float(face.detection_score),
                "embedding": [float(value) for value in face.embedding],
                "identity_similarity": float(face.identity_similarity),
                "created_at_ms": now_ms(),
            }
            for index, face in enumerate(faces)
        ]
        if documents:
            await self._faces.insert_many(documents)
        return documents

    async def of_image(self, image_id: str) -> list[dict[str, Any]]:
        documents = await self._faces.find({"image_id": image_id}).to_list(None)
        return sorted(documents, key=face_index_of)

    async def get(self, image_id: str, face_index: int) -> dict[str, Any] | None:
        return await self._faces.find_one({"_id": face_id(image_id, face_index)})

    async def delete_image(self, image_id: str) -> None:
        await self._faces.delete_many({"image_id": image_id})

    async def delete_user(self, user_id: str) -> int:
        result = await self._faces.delete_many({"user_id": user_id})
        return int(result.deleted_count)

    async def scan(self, batch_size: int) -> AsyncIterator[list[dict[str, Any]]]:
        """Every face, in batches (for reindex)."""
        batch: list[dict[str, Any]] = []
        async for document in self._faces.find({}).sort("_id", 1):
            batch.append(document)
            if len(batch) >= batch_size:
                yield batch
                batch = []
        if batch:
            yield batch


def face_index_of(document: dict[str, Any]) -> int:
    """The face's position in its image (documents written before it was stored carry it in _id)."""
    if "face_index" in document:
        return int(document["face_index"])
    return int(str(document["_id"]).rsplit(":", 1)[1])
