"""What the outbox relays share: how many events wait in an outbox for the broker, and since when.

Upload's jobs are the outbox of `image.uploaded`; auth and history keep activity records in one
(facerestore_common.activity). A backlog that grows means the broker does not take events."""

from __future__ import annotations

from prometheus_client import Gauge

OUTBOX_BACKLOG = Gauge("outbox_backlog_events", "Events recorded and not yet confirmed by the broker", ["outbox"])
OUTBOX_OLDEST_AGE = Gauge(
    "outbox_oldest_event_age_seconds", "Age of the oldest event still waiting in the outbox (0 when empty)", ["outbox"]
)
