"""Accepting an upload: validate, store the original, record the job, announce it.

Nothing accepted is lost and nothing refused is left behind:
- the blob is written first; if recording the job then fails, the blob is deleted again,
  so no blob exists without a job and no job points at a missing blob;
- once the job is recorded the upload is accepted: the job is its own outbox entry, and if
  the broker cannot take `image.uploaded` now, the outbox relay publishes it later (with
  the same event id, so consumers that already saw it ignore the repeat)."""

from __future__ import annotations

import asyncio
import uuid

from facerestore.events.v1 import events_pb2
from facerestore_common.errors import Conflict, Unavailable
from facerestore_common.events import EventBus, new_envelope
from facerestore_common.images import ImageLimits, normalise
from facerestore_common.logging import get_logger
from facerestore_common.metadata import ImageMetadata
from facerestore_common.storage import BlobStore
from facerestore_common.telemetry import current_traceparent
from facerestore_common.timeutil import ms_to_timestamp, now_ms
from upload_service.idempotency import IdempotencyKeys, request_fingerprint
from upload_service.jobs import Job, JobRepository

log = get_logger(__name__)


def uploaded_event(job: Job) -> events_pb2.Envelope:
    envelope = new_envelope(
        "upload",
        image_uploaded=events_pb2.ImageUploaded(
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
        ),
    )
    # The job fixes the event's identity: a re-publication is the same event, not a new one.
    envelope.event_id = job.event_id
    if job.traceparent:
        envelope.traceparent = job.traceparent
    return envelope


class Uploads:
    def __init__(
        self,
        blobs: BlobStore,
        jobs: JobRepository,
        bus: EventBus,
        limits: ImageLimits,
        idempotency: IdempotencyKeys | None = None,
        publish_timeout_seconds: float = 5.0,
        relay_grace_ms: int = 10_000,
    ) -> None:
        self._blobs = blobs
        self._jobs = jobs
        self._bus = bus
        self._limits = limits
        self._idempotency = idempotency
        self._publish_timeout = publish_timeout_seconds
        self._relay_grace_ms = relay_grace_ms

    async def accept(
        self, user_id: str, content: bytes, metadata: ImageMetadata, idempotency_key: str = ""
    ) -> tuple[Job, bool]:
        """Returns the job and whether it is an earlier upload answered again (Idempotency-Key)."""
        image_id = uuid.uuid4().hex
        if idempotency_key and self._idempotency is not None:
            fingerprint = request_fingerprint(content, metadata.tags, metadata.note, metadata.location)
            claim = await self._idempotency.claim(user_id, idempotency_key, fingerprint, image_id)
            if claim.replayed:
                earlier = await self._jobs.get(claim.image_id)
                if earlier is None:
                    raise Conflict(
                        "an upload with this Idempotency-Key is still in progress", reason="idempotency-key-in-use"
                    )
                log.info("upload_replayed", image_id=earlier.image_id, user_id=user_id)
                return earlier, True
            try:
                return await self._accept_new(image_id, user_id, content, metadata), False
            except BaseException:
                await self._idempotency.release(user_id, idempotency_key, image_id)
                raise
        return await self._accept_new(image_id, user_id, content, metadata), False

    async def _accept_new(self, image_id: str, user_id: str, content: bytes, metadata: ImageMetadata) -> Job:
        image = normalise(content, self._limits)
        created_at_ms = now_ms()
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
            created_at_ms=created_at_ms,
            event_id=uuid.uuid4().hex,
            traceparent=current_traceparent(),
            next_publish_at_ms=created_at_ms + self._relay_grace_ms,
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
        await self.publish(job)
        log.info(
            "upload_accepted",
            image_id=image_id,
            user_id=user_id,
            stored_bytes=job.size_bytes,
            bytes_saved=image.bytes_saved,
        )
        return job

    async def publish(self, job: Job) -> bool:
        """Publish the job's event and mark it published; on failure leave it to the relay."""
        try:
            await asyncio.wait_for(self._bus.publish(uploaded_event(job)), self._publish_timeout)
        except Exception as error:
            log.warning("upload_event_deferred", image_id=job.image_id, error=repr(error))
            return False
        try:
            await self._jobs.mark_published(job.image_id)
        except Exception as error:
            # The broker has the event; the job stays unconfirmed, so the relay publishes it again
            # (same event id: consumers drop it). Failing the upload here would free its
            # Idempotency-Key, and the client's retry would make a second image.
            log.warning("upload_publication_unrecorded", image_id=job.image_id, error=repr(error))
        return True

    async def _undo_blob(self, job: Job) -> None:
        try:
            await self._blobs.delete(job.original_key)
        except Exception:
            log.error("orphan_blob_left", key=job.original_key, exc_info=True)
