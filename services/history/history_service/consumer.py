"""Keeps the history read model up to date from image events."""

from __future__ import annotations

from facerestore.events.v1 import events_pb2
from facerestore_common.logging import get_logger
from history_service.history import History
from history_service.items import sort_key

log = get_logger(__name__)


class HistoryProjector:
    def __init__(self, history: History) -> None:
        self._history = history
        self._items = history.items
        self._faces = history.faces

    async def __call__(self, envelope: events_pb2.Envelope) -> None:
        kind = envelope.WhichOneof("payload")
        if kind == "image_uploaded":
            await self._uploaded(envelope.image_uploaded)
        elif kind == "image_processing":
            processing = envelope.image_processing
            await self._items.advance(processing.image_id, processing.user_id, "processing", {})
        elif kind == "image_restored":
            await self._restored(envelope.image_restored)
        elif kind == "image_failed":
            failed = envelope.image_failed
            await self._items.advance(
                failed.image_id, failed.user_id, "failed", {"error": failed.reason, "error_detail": failed.detail}
            )
        else:
            log.info("event_ignored", event_type=envelope.type)

    async def _uploaded(self, event: events_pb2.ImageUploaded) -> None:
        created_at_ms = event.created_at.ToMilliseconds()
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
            },
        )
        await self._items.advance(event.image_id, event.user_id, "queued", {})

    async def _restored(self, event: events_pb2.ImageRestored) -> None:
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
        item = await self._items.advance(event.image_id, event.user_id, "done", fields)
        if item is not None and self._faces is not None:
            await self._faces.replace(event.image_id, event.user_id, event.analyzer_model, event.face_details)
        if item is None:
            # The image was deleted while it was being restored: its results must not outlive it.
            keys = [event.restored_key, event.original_thumbnail_key, event.restored_thumbnail_key]
            await self._history.remove_blobs([key for key in keys if key])
            log.info("late_result_removed", image_id=event.image_id)
