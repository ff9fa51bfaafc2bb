"""Which consumer queue receives which events.

Every service that publishes declares all of these queues when it connects, so an event
published before its consumer has ever started waits in the consumer's queue instead of
being dropped by the broker as unroutable."""

from __future__ import annotations

CONSUMER_BINDINGS: dict[str, tuple[str, ...]] = {
    "inference": ("image.uploaded",),
    "history": (
        "image.uploaded",
        "image.processing",
        "image.restored",
        "image.failed",
        "image.deleted",
        "user.deleted",
    ),
    # Usage statistics, model performance, users' activity and the moderation queue.
    "admin": (
        "image.uploaded",
        "image.restored",
        "image.failed",
        "image.deleted",
        "image.reported",
        "feedback.given",
        "activity.recorded",
        "user.deleted",
    ),
    # An erased account: upload drops its job records and the originals it stored.
    "upload": ("user.deleted",),
}

EMBED_QUEUE_SUFFIX = "embed"


def embed_queue_name(prefix: str) -> str:
    return f"{prefix}.{EMBED_QUEUE_SUFFIX}"
