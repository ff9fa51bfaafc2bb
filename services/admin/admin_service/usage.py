"""Usage over time: one small document per counted event (its id is the event's, so a
redelivered event counts once), bucketed by UTC hour and day, summed by MongoDB per bucket.

Counts come from the events the services publish: auth's and history's activity records
(sign-ups, sign-ins, codes, searches), the gateway's rate-limit tallies, upload's
`image.uploaded` and `restoration.requested`, inference's `image.restored` / `image.failed`
(`done` and `failed` count images: their first restoration only), history's `image.deleted` and
`image.reported`. Times are epoch milliseconds (as everywhere here: the MongoDB stand-in compares
numbers, not dates). The stand-in sums a missing field to null, hence the `or 0`s."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from motor.motor_asyncio import AsyncIOMotorDatabase
from pymongo.errors import DuplicateKeyError

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
STEP_MS = {"hour": HOUR_MS, "day": DAY_MS}
COUNTERS = (
    "sign_ups",
    "sign_ins",
    "codes_sent",
    "codes_verified",
    "codes_failed",
    "code_send_failures",
    "uploads",
    "restorations_requested",
    "done",
    "failed",
    "rate_limited",
    "stored_bytes",
    "freed_bytes",
    "searches",
    "reports",
    "ratings",
)


def bucket_start(at_ms: int, granularity: str) -> int:
    return at_ms - at_ms % STEP_MS[granularity]


@dataclass(frozen=True)
class UsageEntry:
    """What one event adds: some counters, and whether it makes its user active."""

    event_id: str
    at_ms: int
    counts: dict[str, int]
    user_id: str = ""
    active: bool = False
    limit: str = ""


@dataclass
class UsageCounts:
    values: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))
    rate_limited_by_limit: dict[str, int] = field(default_factory=dict)
    active_users: int = 0


@dataclass(frozen=True)
class UsageReport:
    totals: UsageCounts
    series: list[tuple[int, UsageCounts]]


class UsageLedger:
    def __init__(self, database: AsyncIOMotorDatabase) -> None:
        self._entries = database["usage_events"]

    async def create_indexes(self) -> None:
        await self._entries.create_index("at_ms")
        await self._entries.create_index("user_id")

    async def add(self, entry: UsageEntry) -> None:
        unknown = set(entry.counts) - set(COUNTERS)
        if unknown:
            raise ValueError(f"unknown usage counters: {sorted(unknown)}")
        document: dict[str, Any] = {
            "_id": entry.event_id,
            "at_ms": entry.at_ms,
            "hour_ms": bucket_start(entry.at_ms, "hour"),
            "day_ms": bucket_start(entry.at_ms, "day"),
            "user_id": entry.user_id,
            "active": entry.active and bool(entry.user_id),
            **{name: int(value) for name, value in entry.counts.items() if value},
        }
        if entry.limit:
            document["limit"] = entry.limit
        try:
            await self._entries.insert_one(document)
        except DuplicateKeyError:
            pass  # counted already

    async def forget_user(self, user_id: str, pseudonym: str) -> None:
        """An erased account: its counts stay, no longer linked to it (still one distinct user)."""
        await self._entries.update_many({"user_id": user_id}, {"$set": {"user_id": pseudonym}})

    async def report(self, from_ms: int, to_ms: int, granularity: str) -> UsageReport:
        """Totals over [from_ms, to_ms) and one bucket per step; both ends whole buckets."""
        step = STEP_MS[granularity]
        key = f"${granularity}_ms"
        period = {"at_ms": {"$gte": from_ms, "$lt": to_ms}}
        series = {start: UsageCounts() for start in range(from_ms, to_ms, step)}
        sums = {name: {"$sum": f"${name}"} for name in COUNTERS}
        async for group in self._entries.aggregate([{"$match": period}, {"$group": {"_id": key, **sums}}]):
            bucket = series.get(int(group["_id"]))
            if bucket is not None:
                bucket.values = {name: int(group.get(name) or 0) for name in COUNTERS}
        active = {**period, "active": True}
        async for group in self._entries.aggregate(
            [{"$match": active}, {"$group": {"_id": key, "users": {"$addToSet": "$user_id"}}}]
        ):
            bucket = series.get(int(group["_id"]))
            if bucket is not None:
                bucket.active_users = len(group["users"] or [])
        totals = UsageCounts(
            values={name: sum(bucket.values[name] for bucket in series.values()) for name in COUNTERS},
            active_users=len(await self._entries.distinct("user_id", active)),
        )
        async for group in self._entries.aggregate(
            [
                {"$match": {**period, "limit": {"$exists": True}}},
                {"$group": {"_id": "$limit", "refused": {"$sum": "$rate_limited"}}},
            ]
        ):
            totals.rate_limited_by_limit[str(group["_id"])] = int(group.get("refused") or 0)
        return UsageReport(totals=totals, series=sorted(series.items()))
