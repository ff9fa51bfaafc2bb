"""Face embeddings of restored images, the index similar-face search will use. Each
vector is stored with the model that made it: vectors of different models are never
compared."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from motor.motor_asyncio import AsyncIOMotorDatabase

from facerestore.events.v1 import events_pb2
from facerestore_common.timeutil import now_ms


class FaceRepository:
    def __init__(self, database: AsyncIOMotorDatabase) -> None:
        self._faces = database["faces"]

    async def create_indexes(self) -> None:
        await self._faces.create_index("image_id")
        await self._faces.create_index([("user_id", 1), ("model", 1)])

    async def replace(self, image_id: str, user_id: str, model: str, faces: Sequence[events_pb2.RestoredFace]) -> None:
        """Idempotent: a redelivered event writes the same documents under the same ids."""
        await self._faces.delete_many({"image_id": image_id})
        documents = [
            {
                "_id": f"{image_id}:{index}",
                "image_id": image_id,
                "user_id": user_id,
                "model": model,
                "box": list(face.box),
                "detection_score": face.detection_score,
                "embedding": list(face.embedding),
                "identity_similarity": face.identity_similarity,
                "created_at_ms": now_ms(),
            }
            for index, face in enumerate(faces)
        ]
        if documents:
            await self._faces.insert_many(documents)

    async def of_image(self, image_id: str) -> list[dict[str, Any]]:
        return await self._faces.find({"image_id": image_id}).sort("_id", 1).to_list(None)

    async def delete_image(self, image_id: str) -> None:
        await self._faces.delete_many({"image_id": image_id})
