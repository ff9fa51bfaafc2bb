"""Handles image.uploaded and restoration.requested: restores the stored original with the
options the event carries, stores the results under keys derived from the image and version
ids (so a redelivery overwrites, never duplicates), and publishes the outcome."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass

from prometheus_client import Counter, Histogram

from facerestore.events.v1 import events_pb2
from facerestore_common.events import EventBus, derived_event_id, new_envelope
from facerestore_common.logging import get_logger
from facerestore_common.model_registry import ModelOffer
from facerestore_common.storage import BlobNotFound, BlobStore
from inference_service.pipeline import (
    UPSCALES,
    NoChosenFace,
    RestorationPipeline,
    RestorationResult,
    RestoreOptions,
    UndecodableImage,
)

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


FIRST_RESTORATION = "r1"


def result_keys(image_id: str, restoration_id: str = FIRST_RESTORATION) -> tuple[str, str, str]:
    """Restored image, original thumbnail, restored thumbnail. The first version keeps the keys
    images had before versions existed; later ones live under the image's id."""
    original_thumbnail = f"thumbnails/{image_id}-original.jpg"
    if restoration_id in ("", FIRST_RESTORATION):
        return f"restored/{image_id}.jpg", original_thumbnail, f"thumbnails/{image_id}-restored.jpg"
    return (
        f"restored/{image_id}/{restoration_id}.jpg",
        original_thumbnail,
        f"thumbnails/{image_id}/{restoration_id}-restored.jpg",
    )


class OptionRefused(Exception):
    """The options cannot be honoured; the version fails at once with `reason`."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True)
class RestorationJob:
    """One version of one image to restore, from an image.uploaded or a restoration.requested."""

    image_id: str
    user_id: str
    original_key: str
    restoration_id: str
    options: events_pb2.RestorationOptions

    @classmethod
    def of(cls, envelope: events_pb2.Envelope) -> RestorationJob | None:
        payload = envelope.WhichOneof("payload")
        if payload == "image_uploaded":
            uploaded = envelope.image_uploaded
            return cls(
                uploaded.image_id,
                uploaded.user_id,
                uploaded.original_key,
                uploaded.restoration_id or FIRST_RESTORATION,
                uploaded.options,
            )
        if payload == "restoration_requested":
            requested = envelope.restoration_requested
            return cls(
                requested.image_id,
                requested.user_id,
                requested.original_key,
                requested.restoration_id,
                requested.options,
            )
        return None


class RestorationWorker:
    """`pipelines`: one per family this worker serves, with the offer announced for it. An
    event without options (published before options existed) is restored by `default_family`."""

    def __init__(
        self,
        blobs: BlobStore,
        bus: EventBus,
        pipelines: Mapping[str, RestorationPipeline],
        offers: Mapping[str, ModelOffer],
        default_family: str,
    ) -> None:
        if default_family not in pipelines or set(offers) != set(pipelines):
            raise ValueError("every served family needs a pipeline and an offer, the default one included")
        self._blobs = blobs
        self._bus = bus
        self._pipelines = dict(pipelines)
        self._offers = dict(offers)
        self._default_family = default_family

    def family_of(self, job: RestorationJob) -> str:
        return job.options.model or self._default_family

    async def __call__(self, envelope: events_pb2.Envelope) -> None:
        job = RestorationJob.of(envelope)
        if job is None:
            log.info("event_ignored", event_type=envelope.type)
            return
        QUEUE_LAG.observe(max(0.0, time.time() - envelope.occurred_at.ToMilliseconds() / 1000))
        await self._bus.publish(
            new_envelope(
                "inference",
                image_processing=events_pb2.ImageProcessing(
                    image_id=job.image_id, user_id=job.user_id, restoration_id=job.restoration_id
                ),
            )
        )
        try:
            family, options = self._restore_options(job)
        except OptionRefused as refused:
            await self._fail(envelope, refused.reason, str(refused))
            return
        try:
            content = await self._blobs.get(job.original_key)
        except BlobNotFound:
            await self._fail(envelope, "original_missing", "the original is no longer in storage")
            return
        pipeline = self._pipelines[family]
        try:
            result = await asyncio.to_thread(pipeline.run, content, options)
        except UndecodableImage as error:
            await self._fail(envelope, "undecodable", str(error))
            return
        except NoChosenFace as error:
            await self._fail(envelope, "faces_not_found", str(error))
            return
        except Exception:
            # A fault in the computation itself would fail the same way on every retry.
            log.error("restoration_crashed", image_id=job.image_id, exc_info=True)
            await self._fail(envelope, "restoration_error", "the restoration failed")
            return
        # Results first, then the event: a crash in between means a redelivery that
        # overwrites the same keys and publishes the same outcome, never a second result.
        keys = result_keys(job.image_id, job.restoration_id)
        await self._store(keys, result)
        restored = restored_event(job, keys, result, self._applied_options(job, family, options))
        outcome = new_envelope("inference", image_restored=restored)
        outcome.event_id = derived_event_id(envelope.event_id, "outcome")
        await self._bus.publish(outcome)
        RESULTS.labels(result.backend, "done").inc()
        DURATION.labels(result.backend).observe(result.duration_ms / 1000)
        for stage, ms in result.stage_ms.items():
            STAGES.labels(stage, result.backend).observe(ms / 1000)
        FACES.observe(len(result.faces))
        if result.restored_faces:
            IDENTITY.labels(result.analyzer_model).observe(result.identity_min)
        if result.sharpness_before:
            SHARPNESS_GAIN.labels(result.backend).observe(result.sharpness_after / result.sharpness_before)
        log.info(
            "image_restored",
            image_id=job.image_id,
            restoration_id=job.restoration_id,
            model=family,
            faces=len(result.faces),
            identity_min=round(result.identity_min, 3),
            duration_ms=round(result.duration_ms, 1),
            backend=result.backend,
            warnings=result.warnings,
        )

    def _restore_options(self, job: RestorationJob) -> tuple[str, RestoreOptions]:
        """The family to run and the pipeline's options, or OptionRefused. The gateway checks the
        same rules first; these guard against a publisher that did not."""
        family = self.family_of(job)
        if family not in self._pipelines:
            served = ", ".join(self._pipelines)
            raise OptionRefused("model_unavailable", f"this worker serves {served}, not {family}")
        requested = job.options
        fidelity: float | None = None
        if requested.HasField("fidelity"):
            if not self._offers[family].supports_fidelity:
                raise OptionRefused("option_unsupported", f"{family} has no fidelity setting")
            fidelity = requested.fidelity
            if not (math.isfinite(fidelity) and 0.0 <= fidelity <= 1.0):
                raise OptionRefused("option_invalid", f"fidelity must be between 0 and 1, got {fidelity}")
        upscale = requested.upscale or 1
        if upscale not in UPSCALES:
            raise OptionRefused("option_invalid", f"upscale must be one of {UPSCALES}, got {upscale}")
        if any(index < 0 for index in requested.faces):
            raise OptionRefused("option_invalid", "face indexes are 0 or more")
        return family, RestoreOptions(fidelity, tuple(dict.fromkeys(requested.faces)), upscale)

    def _applied_options(
        self, job: RestorationJob, family: str, options: RestoreOptions
    ) -> events_pb2.RestorationOptions:
        """The options as they were applied: the family that ran and the fidelity it ran with."""
        applied = events_pb2.RestorationOptions(model=family, faces=list(job.options.faces), upscale=options.upscale)
        fidelity = options.fidelity if options.fidelity is not None else self._offers[family].default_fidelity
        if fidelity is not None:
            applied.fidelity = fidelity
        return applied

    async def give_up(self, envelope: events_pb2.Envelope, reason: str) -> None:
        """The bus's on_give_up hook: a message about to be dead-lettered still ends as image.failed.

        `reason` comes from the bus, e.g. "retries_exhausted: S3Error" after transient storage or
        broker errors outlasted every retry, "redelivery_limit: ..." after the image took the
        worker down with it again and again, or "permanent: ..."."""
        if RestorationJob.of(envelope) is None:
            return
        details = {
            "retries_exhausted": "storage or messaging kept failing; the restoration was given up after several tries",
            "redelivery_limit": "the restoration stopped the worker every time it was tried; it was given up",
        }
        detail = details.get(reason.partition(":")[0], "the restoration could not be completed")
        await self._fail(envelope, reason, detail)

    async def _store(self, keys: tuple[str, str, str], result: RestorationResult) -> None:
        restored_key, original_thumb_key, restored_thumb_key = keys
        await self._blobs.put(restored_key, result.restored_jpeg, "image/jpeg")
        await self._blobs.put(original_thumb_key, result.original_thumbnail_jpeg, "image/jpeg")
        await self._blobs.put(restored_thumb_key, result.restored_thumbnail_jpeg, "image/jpeg")

    async def _fail(self, source: events_pb2.Envelope, reason: str, detail: str) -> None:
        job = RestorationJob.of(source)
        assert job is not None
        family = self.family_of(job)
        pipeline = self._pipelines.get(family)
        options = events_pb2.RestorationOptions()
        options.CopyFrom(job.options)
        options.model = family
        failed = new_envelope(
            "inference",
            image_failed=events_pb2.ImageFailed(
                image_id=job.image_id,
                user_id=job.user_id,
                reason=reason,
                detail=detail,
                restorer_model=pipeline.restorer.model_id if pipeline else "",
                analyzer_model=pipeline.analyzer.model_id if pipeline else "",
                backend=pipeline.restorer.name if pipeline else family,
                restoration_id=job.restoration_id,
                options=options,
            ),
        )
        failed.event_id = derived_event_id(source.event_id, "outcome")
        await self._bus.publish(failed)
        RESULTS.labels(pipeline.restorer.name if pipeline else family, "failed").inc()
        log.warning("image_failed", image_id=job.image_id, restoration_id=job.restoration_id, reason=reason)


def restored_event(
    job: RestorationJob,
    keys: tuple[str, str, str],
    result: RestorationResult,
    options: events_pb2.RestorationOptions,
) -> events_pb2.ImageRestored:
    restored_key, original_thumb_key, restored_thumb_key = keys
    return events_pb2.ImageRestored(
        image_id=job.image_id,
        user_id=job.user_id,
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
        restoration_id=job.restoration_id,
        options=options,
    )
