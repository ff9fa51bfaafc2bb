"""Accepting an upload: validate, store the original, record the job, announce it.

Nothing accepted is lost and nothing refused is left behind:
- the blob is written first; if recording the job then fails, the blob is deleted again,
  so no blob exists without a job and no job points at a missing blob;
- once the job is recorded the upload is accepted: the job is its own outbox entry, and if
  the broker cannot take `image.uploaded` now, the outbox relay publishes it later (with
  the same event id, so consumers that already saw it ignore the repeat);
- an upload under an Idempotency-Key goes on when its caller goes away (a deadline, a client
  that hung up): its key is freed only when the upload fails before its job is recorded, so a
  retry answers with the job the first attempt may still record instead of making a second
  (idempotency.KeyedRequests, which restorations share);
- a database that does not answer is a 503 the client may retry (Retry-After), never a 500."""

from __future__ import annotations

import asyncio
import uuid

from pymongo.errors import DuplicateKeyError

from facerestore.events.v1 import events_pb2
from facerestore_common import restoration_options
from facerestore_common.errors import Conflict, Unavailable
from facerestore_common.events import EventBus, new_envelope
from facerestore_common.images import ImageLimits, normalise
from facerestore_common.logging import get_logger
from facerestore_common.metadata import ImageMetadata
from facerestore_common.storage import BlobStore
from facerestore_common.telemetry import current_traceparent
from facerestore_common.timeutil import ms_to_timestamp, now_ms
from upload_service.idempotency import IdempotencyKeys, KeyedRequests, options_as_asked, request_fingerprint
from upload_service.jobs import Job, JobRepository

log = get_logger(__name__)

# The upload's own version of the image; reprocessing adds "r2", "r3", ... (restorations.py).
FIRST_RESTORATION = "r1"


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
            # Jobs recorded before options existed publish none: their event keeps the bare key.
            options=restoration_options.from_document(job.options) if job.options else None,
            restoration_id=FIRST_RESTORATION,
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
        claim_lease_ms: int = 60_000,
        retry_after_seconds: int = 2,
    ) -> None:
        self._blobs = blobs
        self._jobs = jobs
        self._bus = bus
        self._limits = limits
        self._keyed = (
            KeyedRequests(idempotency, claim_lease_ms, retry_after_seconds) if idempotency is not None else None
        )
        self._publish_timeout = publish_timeout_seconds
        self._publishing: set[asyncio.Task[bool]] = set()
        self._relay_grace_ms = relay_grace_ms
        self._retry_after = retry_after_seconds

    async def accept(
        self,
        user_id: str,
        content: bytes,
        metadata: ImageMetadata,
        idempotency_key: str = "",
        *,
        options: events_pb2.RestorationOptions | None = None,
        requested_model: str = "",
    ) -> tuple[Job, bool]:
        """Returns the job and whether it is an earlier upload answered again (Idempotency-Key).
        Without options (callers from before they existed) its event names no model and keeps
        the bare routing key. `requested_model` (e.g. "auto") stands for the resolved model when
        requests are compared under an Idempotency-Key."""
        options = restoration_options.checked(options) if options is not None else None
        image_id = uuid.uuid4().hex
        if not idempotency_key or self._keyed is None:
            return await self._accept_new(image_id, user_id, content, metadata, options), False
        fingerprint = request_fingerprint(
            content,
            metadata.tags,
            metadata.note,
            metadata.location,
            options_as_asked(options, requested_model),
        )
        job, replayed = await self._keyed.run(
            user_id,
            idempotency_key,
            fingerprint,
            image_id,
            earlier=self._jobs.get,
            make=lambda claimed_image_id: self._accept_new(claimed_image_id, user_id, content, metadata, options),
        )
        if replayed:
            log.info("upload_replayed", image_id=job.image_id, user_id=user_id)
        return job, replayed

    async def close(self, timeout_seconds: float = 10.0) -> None:
        """Give keyed uploads whose callers went away, and events not yet published, a bounded time to
        finish before the connections close (an event still unpublished then is the relay's)."""
        if self._keyed is not None:
            await self._keyed.close(timeout_seconds)
        await self.published(timeout_seconds)

    async def published(self, timeout_seconds: float = 10.0) -> None:
        """Wait, at most timeout_seconds, for the events of uploads already answered."""
        if self._publishing:
            await asyncio.wait(set(self._publishing), timeout=timeout_seconds)

    def _database_unavailable(self, detail: str) -> Unavailable:
        return Unavailable(detail, reason="database-unavailable", retry_after=self._retry_after)

    async def _accept_new(
        self,
        image_id: str,
        user_id: str,
        content: bytes,
        metadata: ImageMetadata,
        options: events_pb2.RestorationOptions | None,
    ) -> Job:
        # Decoding and encoding release the GIL: other requests go on meanwhile.
        image = await asyncio.to_thread(normalise, content, self._limits)
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
            options=restoration_options.to_document(options) if options is not None else {},
        )
        try:
            await self._blobs.put(job.original_key, image.content, image.content_type)
        except Exception as error:
            log.error("original_store_failed", image_id=image_id, exc_info=True)
            raise Unavailable(
                "storage is unavailable; try again later", reason="storage-unavailable", retry_after=self._retry_after
            ) from error
        try:
            await self._jobs.insert(job)
        except DuplicateKeyError:
            # A taken-over Idempotency-Key's first attempt recorded this image after all: its blob stays.
            raise Conflict(
                "an upload with this Idempotency-Key is still in progress", reason="idempotency-key-in-use"
            ) from None
        except Exception as error:
            log.error("job_record_failed", image_id=image_id, exc_info=True)
            await self._undo_blob(job)
            raise self._database_unavailable("the job could not be recorded; try again later") from error
        # The upload is accepted now: its job is its own outbox entry. The event goes out after the
        # answer, and if this process ends first the relay publishes it after its grace period.
        publishing = asyncio.create_task(self.publish(job))
        self._publishing.add(publishing)
        publishing.add_done_callback(self._publishing.discard)
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
