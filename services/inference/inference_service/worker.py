"""Handles image.uploaded: restores the image, stores the results under keys derived
from the image id (so a redelivery overwrites, never duplicates), and publishes the outcome."""

from __future__ import annotations

import asyncio
import time

from prometheus_client import Counter, Histogram

from facerestore.events.v1 import events_pb2
from facerestore_common.events import EventBus, derived_event_id, new_envelope
from facerestore_common.logging import get_logger
from facerestore_common.storage import BlobNotFound, BlobStore
from inference_service.pipeline import RestorationPipeline, RestorationResult, UndecodableImage

log = get_logger(__name__)

RESULTS = Counter("inference_results_total", "Restoration outcomes", ["backend", "outcome"])
DURATION = Histogram("inference_restore_seconds", "Time to restore one image", ["backend"])
STAGES = Histogram("inference_stage_seconds", "Time per pipeline stage", ["stage", "backend"])
FACES = Histogram("inference_faces_per_image", "Faces found per image", buckets=(0, 1, 2, 3, 5, 8, 13, 21))
# Per image with faces: its worst face's identity similarity before/after (1 = the same person).
IDENTITY = Histogram(
    "inference_identity_similarity",
    "Lowest face identity similarity of a restored image",
    ["analyzer"],
    buckets=(0.3, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 1.0),
)
SHARPNESS_GAIN = Histogram(
    "inference_sharpness_gain",
    "Sharpness after / before restoration, per image",
    ["backend"],
    buckets=(0.5, 0.8, 1.0, 1.2, 1.5, 2, 3, 5, 8, 13),
)
QUEUE_LAG = Histogram(
    "inference_queue_lag_seconds",
    "From the upload's event to the start of its restoration",
    buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900),
)


def result_keys(image_id: str) -> tuple[str, str, str]:
    return (
        f"restored/{image_id}.jpg",
        f"thumbnails/{image_id}-original.jpg",
        f"thumbnails/{image_id}-restored.jpg",
    )


def restored_event(event: events_pb2.ImageUploaded, result: RestorationResult) -> events_pb2.ImageRestored:
    restored_key, original_thumb_key, restored_thumb_key = result_keys(event.image_id)
    return events_pb2.ImageRestored(
        image_id=event.image_id,
        user_id=event.user_id,
        restored_key=restored_key,
        original_thumbnail_key=original_thumb_key,
        restored_thumbnail_key=restored_thumb_key,
        faces=len(result.faces),
        backend=result.backend,
        sharpness_before=result.sharpness_before,
        sharpness_after=result.sharpness_after,
        duration_ms=result.duration_ms,
        restorer_model=result.restorer_model,
        analyzer_model=result.analyzer_model,
        face_details=[
            events_pb2.RestoredFace(
                box=list(face.face.box),
                detection_score=face.face.score,
                landmarks=face.face.landmarks.reshape(-1).tolist(),
                embedding=face.face.embedding.tolist(),
                identity_similarity=face.identity_similarity,
                sharpness_gain=face.sharpness_gain,
            )
            for face in result.faces
        ],
        identity_min=result.identity_min,
        identity_mean=result.identity_mean,
        stage_ms=result.stage_ms,
        warnings=result.warnings,
        stored_bytes=len(result.restored_jpeg)
        + len(result.original_thumbnail_jpeg)
        + len(result.restored_thumbnail_jpeg),
    )


class RestorationWorker:
    def __init__(self, blobs: BlobStore, bus: EventBus, pipeline: RestorationPipeline) -> None:
        self._blobs = blobs
        self._bus = bus
        self._pipeline = pipeline

    async def __call__(self, envelope: events_pb2.Envelope) -> None:
        if envelope.WhichOneof("payload") != "image_uploaded":
            log.info("event_ignored", event_type=envelope.type)
            return
        event = envelope.image_uploaded
        QUEUE_LAG.observe(max(0.0, time.time() - envelope.occurred_at.ToMilliseconds() / 1000))
        await self._bus.publish(
            new_envelope(
                "inference",
                image_processing=events_pb2.ImageProcessing(image_id=event.image_id, user_id=event.user_id),
            )
        )
        try:
            content = await self._blobs.get(event.original_key)
        except BlobNotFound:
            await self._fail(envelope, "original_missing", "the original is no longer in storage")
            return
        try:
            result = await asyncio.to_thread(self._pipeline.run, content)
        except UndecodableImage as error:
            await self._fail(envelope, "undecodable", str(error))
            return
        except Exception:
            # A fault in the computation itself would fail the same way on every retry.
            log.error("restoration_crashed", image_id=event.image_id, exc_info=True)
            await self._fail(envelope, "restoration_error", "the restoration failed")
            return
        # Results first, then the event: a crash in between means a redelivery that
        # overwrites the same keys and publishes the same outcome, never a second result.
        await self._store(event.image_id, result)
        outcome = new_envelope("inference", image_restored=restored_event(event, result))
        outcome.event_id = derived_event_id(envelope.event_id, "outcome")
        await self._bus.publish(outcome)
        RESULTS.labels(result.backend, "done").inc()
        DURATION.labels(result.backend).observe(result.duration_ms / 1000)
        for stage, ms in result.stage_ms.items():
            STAGES.labels(stage, result.backend).observe(ms / 1000)
        FACES.observe(len(result.faces))
        if result.faces:
            IDENTITY.labels(result.analyzer_model).observe(result.identity_min)
        if result.sharpness_before:
            SHARPNESS_GAIN.labels(result.backend).observe(result.sharpness_after / result.sharpness_before)
        log.info(
            "image_restored",
            image_id=event.image_id,
            faces=len(result.faces),
            identity_min=round(result.identity_min, 3),
            duration_ms=round(result.duration_ms, 1),
            backend=result.backend,
            warnings=result.warnings,
        )

    async def give_up(self, envelope: events_pb2.Envelope, reason: str) -> None:
        """The bus's on_give_up hook: a message about to be dead-lettered still ends as image.failed.

        `reason` comes from the bus, e.g. "retries_exhausted: S3Error" after transient storage or
        broker errors outlasted every retry, "redelivery_limit: ..." after the image took the
        worker down with it again and again, or "permanent: ..."."""
        if envelope.WhichOneof("payload") != "image_uploaded":
            return
        details = {
            "retries_exhausted": "storage or messaging kept failing; the restoration was given up after several tries",
            "redelivery_limit": "the restoration stopped the worker every time it was tried; it was given up",
        }
        detail = details.get(reason.partition(":")[0], "the restoration could not be completed")
        await self._fail(envelope, reason, detail)

    async def _store(self, image_id: str, result: RestorationResult) -> None:
        restored_key, original_thumb_key, restored_thumb_key = result_keys(image_id)
        await self._blobs.put(restored_key, result.restored_jpeg, "image/jpeg")
        await self._blobs.put(original_thumb_key, result.original_thumbnail_jpeg, "image/jpeg")
        await self._blobs.put(restored_thumb_key, result.restored_thumbnail_jpeg, "image/jpeg")

    async def _fail(self, source: events_pb2.Envelope, reason: str, detail: str) -> None:
        event = source.image_uploaded
        failed = new_envelope(
            "inference",
            image_failed=events_pb2.ImageFailed(
                image_id=event.image_id,
                user_id=event.user_id,
                reason=reason,
                detail=detail,
                restorer_model=self._pipeline.restorer.model_id,
                analyzer_model=self._pipeline.analyzer.model_id,
                backend=self._pipeline.restorer.name,
            ),
        )
        failed.event_id = derived_event_id(source.event_id, "outcome")
        await self._bus.publish(failed)
        RESULTS.labels(self._pipeline.restorer.name, "failed").inc()
        log.warning("image_failed", image_id=event.image_id, reason=reason)
