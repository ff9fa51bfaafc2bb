"""Keeps the face index a read model of the faces collection: what goes in with which
payload (the item's creation time, tags and location), and how it is rebuilt or re-embedded
from MongoDB and the stored originals."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from facerestore_common.errors import Unprocessable
from facerestore_common.logging import get_logger
from facerestore_common.storage import BlobNotFound, BlobStore
from history_service.embedding_client import EmbeddingClient
from history_service.face_index import FaceIndex, IndexedFace
from history_service.faces import FaceRecord, FaceRepository, face_index_of
from history_service.items import Item, ItemRepository

log = get_logger(__name__)


def indexed_faces(item: Item, documents: Sequence[dict[str, Any]]) -> list[IndexedFace]:
    return [
        IndexedFace(
            image_id=item.id,
            face_index=face_index_of(document),
            user_id=item.user_id,
            model=str(document["model"]),
            vector=[float(value) for value in document["embedding"]],
            created_at_ms=item.created_at_ms,
            location=item.location,
            tags=tuple(item.tags),
            box=tuple(int(value) for value in document.get("box", ())),
        )
        for document in documents
        if document.get("embedding") and document.get("model")
    ]


@dataclass(frozen=True)
class RebuildReport:
    faces_indexed: int
    faces_skipped: int
    seconds: float


@dataclass(frozen=True)
class ReembedReport:
    images_embedded: int
    images_failed: int
    faces_stored: int
    models: tuple[str, ...]
    seconds: float


class FaceIndexer:
    def __init__(self, items: ItemRepository, faces: FaceRepository, index: FaceIndex) -> None:
        self._items = items
        self._faces = faces
        self.index = index

    async def index_image(self, item: Item, documents: Sequence[dict[str, Any]] | None = None) -> None:
        """Make the index hold exactly this image's stored faces (idempotent)."""
        if documents is None:
            documents = await self._faces.of_image(item.id)
        await self.index.replace_image(item.id, indexed_faces(item, documents))

    async def remove_image(self, image_id: str) -> None:
        await self._faces.delete_image(image_id)
        await self.index.delete_image(image_id)

    async def remove_user(self, user_id: str) -> None:
        removed = await self._faces.delete_user(user_id)
        await self.index.delete_user(user_id)
        log.info("user_faces_removed", user_id=user_id, faces=removed)

    async def rebuild(self, batch_size: int = 512) -> RebuildReport:
        """Drop the index and build it again from the faces collection (faces of images that
        are gone are left out), then optimize."""
        started = time.perf_counter()
        await self.index.drop_all()
        indexed = skipped = 0
        async for documents in self._faces.scan(batch_size):
            items = await self._items.get_many(document["image_id"] for document in documents)
            batch: list[IndexedFace] = []
            for document in documents:
                item = items.get(document["image_id"])
                faces = indexed_faces(item, [document]) if item is not None else []
                batch.extend(faces)
                skipped += 1 - len(faces)
            await self.index.upsert(batch)
            indexed += len(batch)
        await self.index.optimize()
        await self.index.flush()
        report = RebuildReport(indexed, skipped, time.perf_counter() - started)
        log.info("face_index_rebuilt", faces=indexed, skipped=skipped, seconds=round(report.seconds, 1))
        return report

    async def re_embed(self, blobs: BlobStore, embedder: EmbeddingClient, batch_size: int = 64) -> ReembedReport:
        """Embed every restored image's original again with the embedder's (current) model,
        replace its stored faces, and index them; then optimize."""
        started = time.perf_counter()
        embedded = failed = stored = 0
        models: set[str] = set()
        async for items in self._items.scan_done(batch_size):
            for item in items:
                # An embedder that does not answer stops the run (Unavailable propagates): running
                # it again finishes the job. A photo it cannot use is skipped and counted.
                try:
                    original = await blobs.get(item.original_key)
                    embedding = await embedder.embed(original)
                except (BlobNotFound, Unprocessable) as error:
                    failed += 1
                    log.warning("re_embed_failed", image_id=item.id, error=str(error))
                    continue
                previous = await self._faces.of_image(item.id)
                # The restoration measured identity per face; kept when the faces are the same ones.
                identity = (
                    [float(doc.get("identity_similarity", 0.0)) for doc in previous]
                    if len(previous) == len(embedding.faces)
                    else [0.0] * len(embedding.faces)
                )
                records = [
                    FaceRecord(face.box, face.detection_score, face.embedding, similarity)
                    for face, similarity in zip(embedding.faces, identity, strict=True)
                ]
                documents = await self._faces.replace(item.id, item.user_id, embedding.model, records)
                await self.index_image(item, documents)
                embedded += 1
                stored += len(documents)
                models.add(embedding.model)
        await self.index.optimize()
        await self.index.flush()
        report = ReembedReport(embedded, failed, stored, tuple(sorted(models)), time.perf_counter() - started)
        log.info(
            "faces_re_embedded",
            images=embedded,
            failed=failed,
            faces=stored,
            models=list(report.models),
            seconds=round(report.seconds, 1),
        )
        return report
