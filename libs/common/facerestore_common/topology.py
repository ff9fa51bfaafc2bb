"""Which consumer queue receives which events.

Every service that publishes declares all of these queues when it connects, so an event
published before its consumer has ever started waits in the consumer's queue instead of
being dropped by the broker as unroutable."""

from __future__ import annotations

CONSUMER_BINDINGS: dict[str, tuple[str, ...]] = {
    "inference": ("image.uploaded",),
    "history": ("image.uploaded", "image.processing", "image.restored", "image.failed"),
}
