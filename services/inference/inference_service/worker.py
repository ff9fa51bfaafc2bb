"""Handles image.uploaded: restores the image, stores the results under keys derived
from the image id (so a redelivery overwrites, never duplicates), and publishes the outcome."""

from __future__ import annotations

import asyncio
from functools import partial

from prometheus_client import Counter, Histogram

from facerestore.events.v1 import events_pb2
from facerestore_common.events import EventBus, new_envelope
from facerestore_common.logging import get_logger
from facerestore_common.storage import BlobNotFound, BlobStore
from inference_service.pipeline import RestorationResult, UndecodableImage, restore_image
from inference_service.restoration.base import Restorer

log = get_logger(__name__)

RESULTS = Counter("inference_results_total", "Restoration outcomes", ["backend", "outcome"])
DURATION = Histogram("inference_restore_seconds", "Time to restore one image", ["backend"])
FACES = Histogram("inference_faces_per_image", "Faces found per image", buckets=(0, 1, 2, 3, 5, 8, 13, 21))


def result_keys(image_id: str) -> tuple[str, str, str]:
    return (
        f"restored/{image_id}.jpg",
        f"thumbnails/{image_id}-original.jpg",
        f"thumbnails/{image_id}-restored.jpg",
    )


class RestorationWorker:
    def __init__(
        self, blobs: BlobStore, bus: EventBus, restorer: Restorer, thumbnail_max_side: int, jpeg_quality: int
    ) -> None:
        self._blobs = blobs
        self._bus = bus
        self._restorer = restorer
        self._thumbnail_max_side = thumbnail_max_side
        self._jpeg_quality = jpeg_quality

    async def __call__(self, envelope: events_pb2.Envelope) -> None:
        if envelope.WhichOneof("payload") != "image_uploaded":
            log.info("event_ignored", event_type=envelope.type)
            return
        event = envelope.image_uploaded
        await self._bus.publish(
            new_envelope(
                "inference",
                image_processing=events_pb2.ImageProcessing(image_id=event.image_id, user_id=event.user_id),
            )
        )
        try:
            content = await self._blobs.get(event.original_key)
        except BlobNotFound:
            await self._fail(event, "original_missing", "the original is no longer in storage")
            return
        try:
            result = await asyncio.to_thread(
                partial(restore_image, content, self._restorer, self._thumbnail_max_side, self._jpeg_quality)
            )
        except UndecodableImage as error:
            await self._fail(event, "undecodable", str(error))
            return
        except Exception:
            # A fault in the computation itself would fail the same way on every retry.
            log.error("restoration_crashed", image_id=event.image_id, exc_info=True)
            await self._fail(event, "restoration_error", "the restoration failed")
            return
        await self._store(event.image_id, result)
        restored_key, original_thumb_key, restored_thumb_key = result_keys(event.image_id)
        await self._bus.publish(
            new_envelope(
                "inference",
                image_restored=events_pb2.ImageRestored(
                    image_id=event.image_id,
                    user_id=event.user_id,
                    restored_key=restored_key,
                    original_thumbnail_key=original_thumb_key,
                    restored_thumbnail_key=restored_thumb_key,
                    faces=result.faces,
                    backend=result.backend,
                    sharpness_before=result.sharpness_before,
                    sharpness_after=result.sharpness_after,
                    duration_ms=result.duration_ms,
                ),
            )
        )
        RESULTS.labels(result.backend, "done").inc()
        DURATION.labels(result.backend).observe(result.duration_ms / 1000)
        FACES.observe(result.faces)
        log.info(
            "image_restored",
            image_id=event.image_id,
            faces=result.faces,
            duration_ms=round(result.duration_ms, 1),
            backend=result.backend,
        )

    async def _store(self, image_id: str, result: RestorationResult) -> None:
        restored_key, original_thumb_key, restored_thumb_key = result_keys(image_id)
        await self._blobs.put(restored_key, result.restored_jpeg, "image/jpeg")
        await self._blobs.put(original_thumb_key, result.original_thumbnail_jpeg, "image/jpeg")
        await self._blobs.put(restored_thumb_key, result.restored_thumbnail_jpeg, "image/jpeg")

    async def _fail(self, event: events_pb2.ImageUploaded, reason: str, detail: str) -> None:
        await self._bus.publish(
            new_envelope(
                "inference",
                image_failed=events_pb2.ImageFailed(
                    image_id=event.image_id, user_id=event.user_id, reason=reason, detail=detail
                ),
            )
        )
        RESULTS.labels(self._restorer.name, "failed").inc()
        log.warning("image_failed", image_id=event.image_id, reason=reason)
