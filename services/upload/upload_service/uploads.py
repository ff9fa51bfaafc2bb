"""Accepting an upload: validate, store the original, record the job, announce it.
Each step that fails undoes the ones before it, so nothing is left half-done."""

from __future__ import annotations

import uuid

from facerestore.events.v1 import events_pb2
from facerestore_common.errors import Unavailable
from facerestore_common.events import EventBus, new_envelope
from facerestore_common.logging import get_logger
from facerestore_common.storage import BlobStore
from facerestore_common.timeutil import ms_to_timestamp, now_ms
from upload_service.jobs import Job, JobRepository
from upload_service.metadata import UploadMetadata
from upload_service.validation import ImageLimits, normalise

log = get_logger(__name__)


class Uploads:
    def __init__(self, blobs: BlobStore, jobs: JobRepository, bus: EventBus, limits: ImageLimits) -> None:
        self._blobs = blobs
        self._jobs = jobs
        self._bus = bus
        self._limits = limits

    async def accept(self, user_id: str, content: bytes, metadata: UploadMetadata) -> Job:
        image = normalise(content, self._limits)
        image_id = uuid.uuid4().hex
        job = Job(
            image_id=image_id,
            user_id=user_id,
            original_key=f"originals/{image_id}.{image.extension}",
            content_type=image.content_type,
            width=image.width,
            height=image.height,
            size_bytes=len(image.content),
            sha256=image.sha256,
            tags=metadata.tags,
            note=metadata.note,
            location=metadata.location,
            created_at_ms=now_ms(),
        )
        try:
            await self._blobs.put(job.original_key, image.content, image.content_type)
        except Exception as error:
            log.error("original_store_failed", image_id=image_id, exc_info=True)
            raise Unavailable("storage is unavailable; try again later", reason="storage-unavailable") from error
        try:
            await self._jobs.insert(job)
        except Exception as error:
            log.error("job_record_failed", image_id=image_id, exc_info=True)
            await self._undo_blob(job)
            raise Unavailable(
                "the job could not be recorded; try again later", reason="database-unavailable"
            ) from error
        try:
            await self._bus.publish(new_envelope("upload", image_uploaded=self._event(job)))
        except Exception as error:
            log.error("upload_event_failed", image_id=image_id, exc_info=True)
            await self._undo_job(job)
            await self._undo_blob(job)
            raise Unavailable("the job could not be queued; try again later", reason="queue-unavailable") from error
        log.info(
            "upload_accepted",
            image_id=image_id,
            user_id=user_id,
            stored_bytes=job.size_bytes,
            bytes_saved=image.original_bytes - job.size_bytes,
        )
        return job

    @staticmethod
    def _event(job: Job) -> events_pb2.ImageUploaded:
        return events_pb2.ImageUploaded(
            image_id=job.image_id,
            user_id=job.user_id,
            original_key=job.original_key,
            content_type=job.content_type,
            width=job.width,
            height=job.height,
            size_bytes=job.size_bytes,
            tags=job.tags,
            note=job.note,
            location=job.location,
            created_at=ms_to_timestamp(job.created_at_ms),
            sha256=job.sha256,
        )

    async def _undo_blob(self, job: Job) -> None:
        try:
            await self._blobs.delete(job.original_key)
        except Exception:
            log.error("orphan_blob_left", key=job.original_key, exc_info=True)

    async def _undo_job(self, job: Job) -> None:
        try:
            await self._jobs.delete(job.image_id)
        except Exception:
            log.error("orphan_job_left", image_id=job.image_id, exc_info=True)
