"""Times: stored as epoch milliseconds (sortable and comparable on every Mongo-protocol server)."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp


def now_ms() -> int:
    return int(datetime.now(UTC).timestamp() * 1000)


def ms_to_timestamp(ms: int) -> Timestamp:
    stamp = Timestamp()
    stamp.FromMilliseconds(ms)
    return stamp
