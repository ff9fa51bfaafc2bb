"""Keeps the history read model up to date from image events."""

from __future__ import annotations

from typing import Any

from facerestore.events.v1 import events_pb2
from facerestore_common import restoration_options
from facerestore_common.logging import get_logger
from history_service.erase import UserEraser
from history_service.faces import FaceRecord
from history_service.history import History
from history_service.indexing import FaceIndexer
from history_service.items import Item, sort_key
from history_service.library import search_words
from history_service.versions import FIRST_RESTORATION

log = get_logger(__name__)

# Events about one image of one user: an erased user's are discarded (erase.py).
_IMAGE_EVENTS = ("image_uploaded", "restoration_requested", "image_processing", "image_restored", "image_failed")


def _restoration_id(event: events_pb2.ImageProcessing | events_pb2.ImageRestored | events_pb2.ImageFailed) -> str:
    # Events from before versions existed name none: they are about the upload's own.
    return event.restoration_id or FIRST_RESTORATION


def _options(event: events_pb2.ImageUploaded | events_pb2.ImageRestored | events_pb2.ImageFailed) -> dict[str, object]:
    return restoration_options.to_document(event.options) if event.HasField("options") else {}


class HistoryProjector:
    def __init__(self, history: History, eraser: UserEraser | None = None) -> None:
        self._history = history
        self._eraser = eraser
        self._items = history.items
        self._versions = history.items.versions
        self._faces = history.faces
        self._indexer = (
            FaceIndexer(history.items, history.faces, history.face_index)
            if history.faces is not None and history.face_index is not None
            else None
        )

    async def __call__(self, envelope: events_pb2.Envelope) -> None:
        kind = envelope.WhichOneof("payload")
        if kind in _IMAGE_EVENTS and self._eraser is not None:
            image = getattr(envelope, kind)
            if await self._eraser.is_erased(image.user_id):
                await self._eraser.discard_image(image.image_id, _keys_named(envelope))
                return
            await self._apply(kind, envelope)
            # Erased while this event was applied (the erasure may have passed this image): undo it.
            if await self._eraser.is_erased(image.user_id):
                await self._eraser.discard_image(image.image_id, _keys_named(envelope))
            return
        await self._apply(kind, envelope)

    async def _apply(self, kind: str | None, envelope: events_pb2.Envelope) -> None:
        if kind == "image_uploaded":
            await self._uploaded(envelope.image_uploaded)
        elif kind == "restoration_requested":
            requested = envelope.restoration_requested
            await self._versions.describe(
                requested.image_id,
                requested.restoration_id,
                restoration_options.to_document(requested.options),
                requested.requested_at.ToMilliseconds(),
            )
            await self._versions.advance(requested.image_id, requested.restoration_id, "queued", {})
        elif kind == "image_processing":
            processing = envelope.image_processing
            restoration_id = _restoration_id(processing)
            if restoration_id == FIRST_RESTORATION:
                await self._items.record_upload(processing.image_id, processing.user_id, {})
            await self._versions.advance(processing.image_id, restoration_id, "processing", {})
            if restoration_id == FIRST_RESTORATION:
                await self._items.advance(processing.image_id, processing.user_id, "processing", {})
        elif kind == "image_restored":
            await self._restored(envelope.image_restored)
        elif kind == "image_failed":
            await self._failed(envelope.image_failed)
        elif kind == "image_deleted":
            # History removed the faces when it deleted the image and published this; applying
            # it again is harmless and catches faces that a result racing the delete wrote.
            if self._indexer is not None:
                await self._indexer.remove_image(envelope.image_deleted.image_id)
            elif self._faces is not None:
                await self._faces.delete_image(envelope.image_deleted.image_id)
        elif kind == "user_deleted":
            if self._eraser is not None:
                await self._eraser.erase(envelope.user_deleted.user_id)
            elif self._indexer is not None:
                await self._indexer.remove_user(envelope.user_deleted.user_id)
            elif self._faces is not None:
                await self._faces.delete_user(envelope.user_deleted.user_id)
        else:
            log.info("event_ignored", event_type=envelope.type)

    async def _uploaded(self, event: events_pb2.ImageUploaded) -> None:
        created_at_ms = event.created_at.ToMilliseconds()
        # Its first version before the item is listed (the facts below list it), so that a
        # reader never sees the image without it.
        await self._items.record_upload(event.image_id, event.user_id, {})
        await self._versions.describe(event.image_id, FIRST_RESTORATION, _options(event), created_at_ms)
        await self._versions.advance(event.image_id, FIRST_RESTORATION, "queued", {})
        await self._items.record_upload(
            event.image_id,
            event.user_id,
            {
                "created_at_ms": created_at_ms,
                "sort_key": sort_key(created_at_ms, event.image_id),
                "original_key": event.original_key,
                "tags": list(event.tags),
                "note": event.note,
                "location": event.location,
                "width": event.width,
                "height": event.height,
                "sha256": event.sha256,
                "search_words": search_words(event.tags, event.note),
            },
        )
        item = await self._items.advance(event.image_id, event.user_id, "queued", {})
        if item is not None and item.status == "done" and self._indexer is not None:
            # The result came first: its faces wait for the upload's date, tags and location.
            await self._indexer.index_image(item)

    async def _failed(self, event: events_pb2.ImageFailed) -> None:
        restoration_id = _restoration_id(event)
        fields = {"error": event.reason, "error_detail": event.detail}
        options = _options(event)
        if restoration_id == FIRST_RESTORATION:
            # The document exists even when the outcome comes before the upload's event.
            await self._items.record_upload(event.image_id, event.user_id, {})
        await self._versions.advance(
            event.image_id, restoration_id, "failed", {**fields, **({"options": options} if options else {})}
        )
        if restoration_id == FIRST_RESTORATION:
            await self._items.advance(event.image_id, event.user_id, "failed", fields)

    async def _restored(self, event: events_pb2.ImageRestored) -> None:
        restoration_id = _restoration_id(event)
        fields = {
            "restored_key": event.restored_key,
            "original_thumbnail_key": event.original_thumbnail_key,
            "restored_thumbnail_key": event.restored_thumbnail_key,
            "faces": event.faces,
            "quality": {
                "backend": event.backend,
                "sharpness_before": event.sharpness_before,
                "sharpness_after": event.sharpness_after,
                "sharpness_gain": event.sharpness_after / event.sharpness_before if event.sharpness_before else 0.0,
                "duration_ms": event.duration_ms,
                "restorer_model": event.restorer_model,
                "analyzer_model": event.analyzer_model,
                "identity_min": event.identity_min,
                "identity_mean": event.identity_mean,
                "stage_ms": dict(event.stage_ms),
                "warnings": list(event.warnings),
                "face_detection_scores": [face.detection_score for face in event.face_details],
            },
        }
        if restoration_id == FIRST_RESTORATION:
            # The document exists even when the result comes before the upload's event.
            await self._items.record_upload(event.image_id, event.user_id, {})
        options = _options(event)
        version_fields = {
            **fields,
            "face_identity": [face.identity_similarity for face in event.face_details],
            **({"options": options} if options else {}),
        }
        doc = await self._versions.advance(event.image_id, restoration_id, "done", version_fields)
        item = Item.from_document(doc) if doc is not None and "user_id" in doc else None
        detected = [
            {
                "box": list(face.box),
                "detection_score": face.detection_score,
                "identity_similarity": face.identity_similarity,
            }
            for face in event.face_details
        ]
        # The faces are the original's, the same for every version: stored and indexed once.
        claimed = (
            item is not None
            and self._faces is not None
            and await self._versions.claim_faces(event.image_id, restoration_id, detected)
        )
        documents: list[dict[str, Any]] = []
        if claimed and self._faces is not None:
            records = [
                FaceRecord(face.box, face.detection_score, face.embedding, face.identity_similarity)
                for face in event.face_details
            ]
            documents = await self._faces.replace(event.image_id, event.user_id, event.analyzer_model, records)
        if restoration_id == FIRST_RESTORATION:
            # After its version and faces: a reader that sees the image done sees them too. The
            # item shows "r1" unless its owner preferred another version, which is done already:
            # then this no longer moves the item (done is as far as it goes).
            await self._items.advance(event.image_id, event.user_id, "done", fields)
        if claimed and self._indexer is not None:
            # Read after the write above: if the upload's event is applied meanwhile, either this
            # sees the image listed or that sees it done (HistoryProjector._uploaded), and indexes it.
            listed = await self._items.get(event.image_id)
            if listed is not None:
                await self._indexer.index_image(listed, documents)
        if item is None:
            # The image was deleted while it was being restored: its results must not outlive it.
            keys = [event.restored_key, event.original_thumbnail_key, event.restored_thumbnail_key]
            await self._history.remove_blobs([key for key in keys if key])
            log.info("late_result_removed", image_id=event.image_id)


def _keys_named(envelope: events_pb2.Envelope) -> list[str]:
    """The files an image event says were stored."""
    if envelope.HasField("image_uploaded"):
        return [envelope.image_uploaded.original_key]
    if envelope.HasField("image_restored"):
        restored = envelope.image_restored
        return [restored.restored_key, restored.original_thumbnail_key, restored.restored_thumbnail_key]
    return []
