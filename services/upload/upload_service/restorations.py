"""Another version of a stored image: its owner asks for the original to be restored again
with other options (POST /v1/images/{id}/restorations).

The request is kept like an upload: the version id is allocated on the image's job record
(one atomic increment: "r2", "r3", ...), the request is recorded in `restoration_requests`,
which is its own outbox entry, and `restoration.requested` is published; if the broker cannot
take it now, the outbox relay publishes it later with the same event id.

Under an Idempotency-Key (scoped to the user and the image) a repeat answers with the first
request, as for uploads (idempotency.KeyedRequests). The claim names the request's event id,
which exists before its version id is allocated; event ids are unique among the requests, so a
retry that takes over an abandoned claim and the late first attempt cannot both record one."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import asdict, dataclass
from typing import Any

from motor.motor_asyncio import AsyncIOMotorDatabase
from pymongo.errors import DuplicateKeyError

from facerestore.events.v1 import events_pb2
from facerestore_common import restoration_options
from facerestore_common.errors import Conflict, NotFound, Unavailable
from facerestore_common.events import EventBus, new_envelope
from facerestore_common.logging import get_logger
from facerestore_common.telemetry import current_traceparent
from facerestore_common.timeutil import ms_to_timestamp, now_ms
from upload_service.idempotency import IdempotencyKeys, KeyedRequests, options_fingerprint
from upload_service.jobs import Job, JobRepository

log = get_logger(__name__)


@dataclass(frozen=True)
class RestorationRequest:
    image_id: str
    user_id: str
    restoration_id: str
    original_key: str
    options: dict[str, Any]
    created_at_ms: int
    event_id: str
    traceparent: str = ""
    published: bool = False
    publish_attempts: int = 0
    next_publish_at_ms: int = 0

    @property
    def key(self) -> str:
        return f"{self.image_id}:{self.restoration_id}"

    @classmethod
    def from_document(cls, doc: dict[str, Any]) -> RestorationRequest:
        fields = {name: doc[name] for name in cls.__dataclass_fields__ if name in doc}
        fields["published"] = bool(fields.get("published", False))
        return cls(**fields)


def requested_event(request: RestorationRequest) -> events_pb2.Envelope:
    envelope = new_envelope(
        "upload",
        restoration_requested=events_pb2.RestorationRequested(
            image_id=request.image_id,
            user_id=request.user_id,
            restoration_id=request.restoration_id,
            original_key=request.original_key,
            options=restoration_options.from_document(request.options),
            requested_at=ms_to_timestamp(request.created_at_ms),
        ),
    )
    # The record fixes the event's identity: a re-publication is the same event.
    envelope.event_id = request.event_id
    if request.traceparent:
        envelope.traceparent = request.traceparent
    return envelope


class RestorationRequestRepository:
    def __init__(self, database: AsyncIOMotorDatabase) -> None:
        self._requests = database["restoration_requests"]

    async def create_indexes(self) -> None:
        await self._requests.create_index([("published", 1), ("next_publish_at_ms", 1)])
        await self._requests.create_index("user_id")
        await self._requests.create_index("event_id", unique=True)

    async def insert(self, request: RestorationRequest) -> None:
        await self._requests.insert_one({"_id": request.key, **asdict(request)})

    async def by_event_id(self, event_id: str) -> RestorationRequest | None:
        doc = await self._requests.find_one({"event_id": event_id})
        return RestorationRequest.from_document(doc) if doc else None

    async def mark_published(self, request: RestorationRequest) -> None:
        await self._requests.update_one(
            {"_id": request.key},
            {"$set": {"published": True, "published_at_ms": now_ms()}, "$inc": {"publish_attempts": 1}},
        )

    async def postpone(self, request: RestorationRequest, delay_ms: int) -> None:
        await self._requests.update_one(
            {"_id": request.key},
            {"$set": {"next_publish_at_ms": now_ms() + delay_ms}, "$inc": {"publish_attempts": 1}},
        )

    async def backlog(self) -> tuple[int, int | None]:
        """How many requests wait for their event to be confirmed, and the oldest one's time."""
        waiting = await self._requests.count_documents({"published": False})
        oldest = (
            await self._requests.find({"published": False}, {"created_at_ms": 1})
            .sort("next_publish_at_ms", 1)
            .limit(1)
            .to_list(None)
        )
        return waiting, (int(oldest[0]["created_at_ms"]) if oldest else None)

    async def due_for_publishing(self, limit: int) -> list[RestorationRequest]:
        docs = (
            await self._requests.find({"published": False, "next_publish_at_ms": {"$lte": now_ms()}})
            .sort("next_publish_at_ms", 1)
            .limit(limit)
            .to_list(None)
        )
        return [RestorationRequest.from_document(doc) for doc in docs]

    async def delete_user(self, user_id: str) -> int:
        result = await self._requests.delete_many({"user_id": user_id})
        return int(result.deleted_count)


class Restorations:
    def __init__(
        self,
        jobs: JobRepository,
        requests: RestorationRequestRepository,
        bus: EventBus,
        publish_timeout_seconds: float = 5.0,
        relay_grace_ms: int = 10_000,
        idempotency: IdempotencyKeys | None = None,
        claim_lease_ms: int = 60_000,
        retry_after_seconds: int = 2,
    ) -> None:
        self._jobs = jobs
        self.requests = requests
        self._bus = bus
        self._publish_timeout = publish_timeout_seconds
        self._relay_grace_ms = relay_grace_ms
        self._keyed = (
            KeyedRequests(idempotency, claim_lease_ms, retry_after_seconds) if idempotency is not None else None
        )

    async def request(
        self,
        user_id: str,
        image_id: str,
        options: events_pb2.RestorationOptions,
        idempotency_key: str = "",
        *,
        requested_model: str = "",
    ) -> tuple[RestorationRequest, bool]:
        """Record another version of the user's image and announce it; and whether it is an
        earlier request answered again (Idempotency-Key). Someone else's image is
        indistinguishable from a missing one (404). `requested_model` (e.g. "auto") stands for
        the resolved model when requests are compared under an Idempotency-Key."""
        options = restoration_options.checked(options)
        job = await self._jobs.get(image_id)
        if job is None or job.user_id != user_id:
            raise NotFound("no such image", reason="not-found")
        event_id = uuid.uuid4().hex
        if not idempotency_key or self._keyed is None:
            return await self._record(job, options, event_id), False
        request, replayed = await self._keyed.run(
            f"{user_id}:{image_id}",
            idempotency_key,
            options_fingerprint(options, requested_model),
            event_id,
            earlier=self.requests.by_event_id,
            make=lambda claimed_event_id: self._record(job, options, claimed_event_id),
        )
        if replayed:
            log.info("restoration_replayed", image_id=image_id, restoration_id=request.restoration_id)
        return request, replayed

    async def close(self, timeout_seconds: float = 10.0) -> None:
        """Give keyed requests whose callers went away a bounded time to finish before the connections close."""
        if self._keyed is not None:
            await self._keyed.close(timeout_seconds)

    async def _record(self, job: Job, options: events_pb2.RestorationOptions, event_id: str) -> RestorationRequest:
        image_id = job.image_id
        try:
            restoration_id = await self._jobs.allocate_restoration(image_id, job.user_id)
        except Exception as error:
            log.error("restoration_id_not_allocated", image_id=image_id, exc_info=True)
            raise Unavailable(
                "the request could not be recorded; try again later", reason="database-unavailable"
            ) from error
        if restoration_id is None:
            raise NotFound("no such image", reason="not-found")
        created_at_ms = now_ms()
        request = RestorationRequest(
            image_id=image_id,
            user_id=job.user_id,
            restoration_id=restoration_id,
            original_key=job.original_key,
            options=restoration_options.to_document(options),
            created_at_ms=created_at_ms,
            event_id=event_id,
            traceparent=current_traceparent(),
            next_publish_at_ms=created_at_ms + self._relay_grace_ms,
        )
        try:
            await self.requests.insert(request)
        except DuplicateKeyError:
            # A taken-over Idempotency-Key's first attempt recorded this request after all; this
            # attempt's version id stays used.
            raise Conflict(
                "a restoration with this Idempotency-Key is still in progress", reason="idempotency-key-in-use"
            ) from None
        except Exception as error:
            # The id stays used: the next request gets the one after it.
            log.error("restoration_request_not_recorded", image_id=image_id, exc_info=True)
            raise Unavailable(
                "the request could not be recorded; try again later", reason="database-unavailable"
            ) from error
        await self.publish(request)
        log.info("restoration_requested", image_id=image_id, restoration_id=restoration_id, model=options.model)
        return request

    async def publish(self, request: RestorationRequest) -> bool:
        """Publish the request's event and mark it published; on failure leave it to the relay."""
        try:
            await asyncio.wait_for(self._bus.publish(requested_event(request)), self._publish_timeout)
        except Exception as error:
            log.warning("restoration_event_deferred", image_id=request.image_id, error=repr(error))
            return False
        try:
            await self.requests.mark_published(request)
        except Exception as error:
            # The broker has it; the relay publishes it again under the same event id.
            log.warning("restoration_publication_unrecorded", image_id=request.image_id, error=repr(error))
        return True
