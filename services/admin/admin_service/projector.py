"""Turns the platform's events into the admin service's read models: usage counts, model
results, users' activity and the moderation queue. Every write is keyed by the event (or the
restoration), so an event handled twice changes nothing.

An image can be restored more than once ("r1" with the upload, then "r2", "r3"... on request):
each restoration counts for the model that made it, while the usage counts images (an upload,
then its first restoration done or failed) and, apart, the restorations requested later."""

from __future__ import annotations

import uuid

from admin_service.moderation import ModerationQueue
from admin_service.results import ModelResults, Restoration
from admin_service.timeline import Timeline
from admin_service.usage import UsageEntry, UsageLedger
from facerestore.events.v1 import events_pb2
from facerestore_common.logging import get_logger

log = get_logger(__name__)

# What each kind of activity record counts, and whether it makes its user active in the period.
ACTIVITY_COUNTERS: dict[str, tuple[str, bool]] = {
    "user.signed_up": ("sign_ups", False),
    "user.signed_in": ("sign_ins", True),
    "code.sent": ("codes_sent", False),
    "code.verified": ("codes_verified", False),
    "code.failed": ("codes_failed", False),
    "code.send_failed": ("code_send_failures", False),
    "rate_limit.refused": ("rate_limited", False),
    "search.made": ("searches", True),
}


def _ms(envelope: events_pb2.Envelope) -> int:
    return int(envelope.occurred_at.ToMilliseconds())


class AdminProjector:
    def __init__(
        self, usage: UsageLedger, results: ModelResults, timeline: Timeline, moderation: ModerationQueue
    ) -> None:
        self._usage = usage
        self._results = results
        self._timeline = timeline
        self._moderation = moderation

    async def __call__(self, envelope: events_pb2.Envelope) -> None:
        kind = envelope.WhichOneof("payload")
        if kind == "activity_recorded":
            await self._activity(envelope.event_id, envelope.activity_recorded)
        elif kind == "image_uploaded":
            await self._uploaded(envelope)
        elif kind == "restoration_requested":
            await self._requested(envelope)
        elif kind == "image_restored":
            await self._restored(envelope)
        elif kind == "image_failed":
            await self._failed(envelope)
        elif kind == "image_deleted":
            await self._deleted(envelope)
        elif kind == "image_reported":
            await self._reported(envelope)
        elif kind == "feedback_given":
            await self._rated(envelope)
        elif kind == "user_deleted":
            await self._forget(envelope.user_deleted.user_id)
        else:
            log.info("event_ignored", event_type=envelope.type)

    async def _activity(self, event_id: str, activity: events_pb2.ActivityRecorded) -> None:
        at_ms = int(activity.at.ToMilliseconds())
        labels = dict(activity.labels)
        counted = ACTIVITY_COUNTERS.get(activity.kind)
        if counted is not None:
            counter, active = counted
            await self._usage.add(
                UsageEntry(
                    event_id,
                    at_ms,
                    {counter: max(1, activity.count)},
                    user_id=activity.user_id,
                    active=active,
                    limit=labels.get("limit", "") if counter == "rate_limited" else "",
                )
            )
        await self._timeline.add(event_id, activity.user_id, activity.kind, at_ms, labels)

    async def _uploaded(self, envelope: events_pb2.Envelope) -> None:
        event = envelope.image_uploaded
        at_ms = int(event.created_at.ToMilliseconds()) or _ms(envelope)
        await self._results.uploaded(event.image_id, event.user_id, at_ms, event.size_bytes)
        await self._usage.add(
            UsageEntry(
                envelope.event_id,
                at_ms,
                {"uploads": 1, "stored_bytes": event.size_bytes},
                user_id=event.user_id,
                active=True,
            )
        )
        await self._timeline.add(
            envelope.event_id, event.user_id, "image.uploaded", at_ms, {"image_id": event.image_id}
        )

    async def _requested(self, envelope: events_pb2.Envelope) -> None:
        event = envelope.restoration_requested
        at_ms = int(event.requested_at.ToMilliseconds()) or _ms(envelope)
        await self._results.requested(Restoration(event.image_id, event.restoration_id), event.user_id, at_ms)
        await self._usage.add(
            UsageEntry(envelope.event_id, at_ms, {"restorations_requested": 1}, user_id=event.user_id, active=True)
        )
        details = {"image_id": event.image_id, "restoration_id": event.restoration_id}
        if event.options.model:
            details["model"] = event.options.model
        await self._timeline.add(envelope.event_id, event.user_id, "restoration.requested", at_ms, details)

    async def _restored(self, envelope: events_pb2.Envelope) -> None:
        event = envelope.image_restored
        at_ms = _ms(envelope)
        restoration = Restoration(event.image_id, event.restoration_id)
        await self._results.restored(
            restoration,
            event.user_id,
            at_ms,
            {
                "restorer_model": event.restorer_model or event.backend,
                "analyzer_model": event.analyzer_model,
                "backend": event.backend,
                "duration_ms": event.duration_ms,
                "stage_ms": dict(event.stage_ms),
                "faces": event.faces,
                "identity_min": event.identity_min,
                "sharpness_gain": event.sharpness_after / event.sharpness_before if event.sharpness_before else 0.0,
                "result_bytes": event.stored_bytes,
            },
        )
        # A later version's results take storage too, but the image was counted done already.
        counts = {"done": 1} if restoration.is_first else {}
        await self._usage.add(
            UsageEntry(envelope.event_id, at_ms, {**counts, "stored_bytes": event.stored_bytes}, user_id=event.user_id)
        )

    async def _failed(self, envelope: events_pb2.Envelope) -> None:
        event = envelope.image_failed
        at_ms = _ms(envelope)
        restoration = Restoration(event.image_id, event.restoration_id)
        await self._results.failed(
            restoration,
            event.user_id,
            at_ms,
            {
                "restorer_model": event.restorer_model or event.backend,
                "analyzer_model": event.analyzer_model,
                "backend": event.backend,
                "failure_reason": event.reason,
            },
        )
        if restoration.is_first:  # a later version's failure leaves the image as it was
            await self._usage.add(UsageEntry(envelope.event_id, at_ms, {"failed": 1}, user_id=event.user_id))

    async def _deleted(self, envelope: events_pb2.Envelope) -> None:
        event = envelope.image_deleted
        at_ms = _ms(envelope)
        estimated = await self._results.deleted(event.image_id)
        # History measures the bucket; only its events from before it did need the estimate.
        freed = event.freed_bytes if event.HasField("freed_bytes") else estimated
        await self._usage.add(UsageEntry(envelope.event_id, at_ms, {"freed_bytes": freed}, user_id=event.user_id))
        details = {"image_id": event.image_id, "deleted_by": event.deleted_by}
        await self._timeline.add(envelope.event_id, event.user_id, "image.deleted", at_ms, details)

    async def _reported(self, envelope: events_pb2.Envelope) -> None:
        event = envelope.image_reported
        at_ms = int(event.reported_at.ToMilliseconds()) or _ms(envelope)
        await self._moderation.reported(envelope.event_id, event.image_id, event.user_id, event.reason, at_ms)
        await self._usage.add(UsageEntry(envelope.event_id, at_ms, {"reports": 1}, user_id=event.user_id, active=True))
        details = {"image_id": event.image_id, "reason": event.reason}
        await self._timeline.add(envelope.event_id, event.user_id, "image.reported", at_ms, details)

    async def _rated(self, envelope: events_pb2.Envelope) -> None:
        event = envelope.feedback_given
        at_ms = int(event.given_at.ToMilliseconds()) or _ms(envelope)
        models = {
            "restorer_model": event.restorer_model or event.backend,
            "analyzer_model": event.analyzer_model,
        }
        await self._results.rated(event.image_id, event.rating, at_ms, models)
        await self._moderation.rated(envelope.event_id, event.image_id, event.user_id, event.rating, at_ms)
        await self._usage.add(UsageEntry(envelope.event_id, at_ms, {"ratings": 1}, user_id=event.user_id, active=True))
        details = {"image_id": event.image_id, "rating": str(event.rating)}
        await self._timeline.add(envelope.event_id, event.user_id, "feedback.given", at_ms, details)

    async def _forget(self, user_id: str) -> None:
        """An erased account: its activity goes; counts stay, unlinked from it."""
        await self._timeline.forget_user(user_id)
        await self._usage.forget_user(user_id, f"erased-{uuid.uuid4().hex}")
        await self._results.forget_user(user_id)
        await self._moderation.forget_user(user_id)
