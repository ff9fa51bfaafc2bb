"""Another version of a stored image: its owner asks for the original to be restored again
with other options (POST /v1/images/{id}/restorations).

The request is kept like an upload: the version id is allocated on the image's job record
(one atomic increment: "r2", "r3", ...), the request is recorded in `restoration_requests`,
which is its own outbox entry, and `restoration.requested` is published; if the broker cannot
take it now, the outbox relay publishes it later with the same event id."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import asdict, dataclass
from typing import Any

from motor.motor_asyncio import AsyncIOMotorDatabase

from facerestore.events.v1 import events_pb2
from facerestore_common import restoration_options
from facerestore_common.errors import NotFound, Unavailable
from facerestore_common.events import EventBus, new_envelope
from facerestore_common.logging import get_logger
from facerestore_common.telemetry import current_traceparent
from facerestore_common.timeutil import ms_to_timestamp, now_ms
from upload_service.jobs import JobRepository

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

    async def insert(self, request: RestorationRequest) -> None:
        await self._requests.insert_one({"_id": request.key, **asdict(request)})

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
    ) -> None:
        self._jobs = jobs
        self.requests = requests
        self._bus = bus
        self._publish_timeout = publish_timeout_seconds
        self._relay_grace_ms = relay_grace_ms

    async def request(self, user_id: str, image_id: str, options: events_pb2.RestorationOptions) -> RestorationRequest:
        """Record another version of the user's image and announce it. Someone else's image is
        indistinguishable from a missing one (404)."""
        options = restoration_options.checked(options)
        job = await self._jobs.get(image_id)
        if job is None or job.user_id != user_id:
            raise NotFound("no such image", reason="not-found")
        try:
            restoration_id = await self._jobs.allocate_restoration(image_id, user_id)
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
            user_id=user_id,
            restoration_id=restoration_id,
            original_key=job.original_key,
            options=restoration_options.to_document(options),
            created_at_ms=created_at_ms,
            event_id=uuid.uuid4().hex,
            traceparent=current_traceparent(),
            next_publish_at_ms=created_at_ms + self._relay_grace_ms,
        )
        try:
            await self.requests.insert(request)
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
