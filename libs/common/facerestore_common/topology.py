"""Which consumer queue receives which events.

Every service that publishes declares all of these queues when it connects, so an event
published before its consumer has ever started waits in the consumer's queue instead of
being dropped by the broker as unroutable."""

from __future__ import annotations

# The restorer families a worker can serve. An upload or a reprocess names one in its options
# and is published with the routing key "<type>.<family>" (facerestore_common.events.routing_key_of),
# so only the queue of that family's workers gets it.
RESTORER_FAMILIES: tuple[str, ...] = ("gfpgan", "codeformer", "classical")

# Events routed by the restorer family their options name.
ROUTED_BY_MODEL: tuple[str, ...] = ("image.uploaded", "restoration.requested")


def inference_consumer(family: str) -> str:
    return f"inference.{family}"


# Before per-family queues there was one "<prefix>.inference" queue bound to the bare
# "image.uploaded". No one declares it any more; restore workers drain it while it exists
# (inference_service.main), and an operator deletes it once it is empty.
LEGACY_INFERENCE_CONSUMER = "inference"

CONSUMER_BINDINGS: dict[str, tuple[str, ...]] = {
    **{
        inference_consumer(family): tuple(f"{event_type}.{family}" for event_type in ROUTED_BY_MODEL)
        for family in RESTORER_FAMILIES
    },
    "history": (
        # "#" matches no word too: the bare key of an event without options arrives as well.
        "image.uploaded.#",
        "restoration.requested.#",
        "image.processing",
        "image.restored",
        "image.failed",
        "image.deleted",
        "user.deleted",
    ),
    # Usage statistics, model performance, users' activity and the moderation queue.
    "admin": (
        "image.uploaded.#",
        "restoration.requested.#",
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
