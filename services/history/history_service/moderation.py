"""A result that should not be seen: its owner reports it, and it joins the admins' moderation
queue (an `image.reported` event); an admin hides it pending review (its owner still sees the
item, marked under review, without its pictures, and searches leave it out) and shows it again,
or deletes it (History.delete)."""

from __future__ import annotations

from facerestore.events.v1 import events_pb2
from facerestore_common.errors import InvalidArgument, NotFound
from facerestore_common.events import EventBus, new_envelope
from facerestore_common.logging import get_logger
from facerestore_common.timeutil import ms_to_timestamp, now_ms
from history_service.history import History
from history_service.items import Item

log = get_logger(__name__)

REPORT_REASONS = ("inappropriate", "wrong-person", "poor-quality", "other")
MAX_NOTE_CHARS = 500


class Moderation:
    def __init__(self, history: History, bus: EventBus) -> None:
        self._history = history
        self._bus = bus

    async def report(self, user_id: str, image_id: str, reason: str, note: str) -> None:
        if reason not in REPORT_REASONS:
            raise InvalidArgument(f"reason must be one of {', '.join(REPORT_REASONS)}", reason="validation-error")
        if len(note) > MAX_NOTE_CHARS:
            raise InvalidArgument(f"the note is longer than {MAX_NOTE_CHARS} characters", reason="validation-error")
        item = await self._history.get_own(user_id, image_id)
        await self._history.items.add_report(image_id)
        await self._bus.publish(
            new_envelope(
                "history",
                image_reported=events_pb2.ImageReported(
                    image_id=image_id,
                    user_id=item.user_id,
                    reason=reason,
                    note=note.strip(),
                    reported_at=ms_to_timestamp(now_ms()),
                ),
            )
        )
        log.info("image_reported", image_id=image_id, user_id=user_id, reason=reason)

    async def set_hidden(self, image_id: str, hidden: bool, reason: str) -> Item:
        item = await self._history.items.set_under_review(image_id, hidden, reason)
        if item is None:
            raise NotFound("no such image", reason="not-found")
        log.info("image_under_review" if hidden else "image_shown_again", image_id=image_id, reason=reason)
        return item
