"""After a run: wait until the platform has settled, then account for every upload.

Sources, all read from the run's own servers once the load has stopped:
- the client journal (what Locust's users were told: 202s, given-up and refused uploads);
- the upload service's jobs (every upload the platform accepted, each with the client's
  Idempotency-Key in its note), the history items (status, error, result keys, times) and
  the faces stored per image, in MongoDB;
- the bucket's objects;
- a tap queue bound before the load started to `image.uploaded.#`, `image.restored` and
  `image.failed` (every publication of those events, repeats included);
- the dead-letter queues.

An upload is lost when it was accepted (a job exists, or the client was told 202) and has
not ended done or failed, or ended done without its result in the bucket. It is duplicated
when one Idempotency-Key made more than one job or image id, when its image has more than
one distinct outcome or upload event, more faces stored than it reported, or more than one
original in the bucket."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
from minio import Minio
from pymongo import MongoClient

from facerestore.events.v1 import events_pb2
from facerestore_common.settings import StorageSettings

TAP_QUEUE = "loadrun.tap"
# Uploads are routed as image.uploaded.<model>; '#' also matches the bare key.
TAP_KEYS = ("image.uploaded.#", "image.restored", "image.failed")
CONSUMER_QUEUES = ("inference.gfpgan", "inference.codeformer", "inference.classical", "history")
NOTE_PREFIX = "load:"
RESULT_FIELDS = ("restored_key", "original_thumbnail_key", "restored_thumbnail_key")
_KEY_PATTERNS = (
    ("original", re.compile(r"^originals/([0-9a-f]+)\.\w+$")),
    ("restored", re.compile(r"^restored/([0-9a-f]+)\.jpg$")),
    ("original_thumbnail", re.compile(r"^thumbnails/([0-9a-f]+)-original\.jpg$")),
    ("restored_thumbnail", re.compile(r"^thumbnails/([0-9a-f]+)-restored\.jpg$")),
)


def read_journal(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# -- the broker side ------------------------------------------------------------------------


async def _declare_tap(amqp_url: str, exchange: str) -> None:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(TAP_QUEUE, durable=True)
        for key in TAP_KEYS:
            await queue.bind(exchange, routing_key=key)


def declare_tap(amqp_url: str, exchange: str) -> None:
    """Bind the tap queue; call it once the stack is up (its services declare the exchange)."""
    asyncio.run(_declare_tap(amqp_url, exchange))


async def _queue_depths(amqp_url: str, names: Iterable[str]) -> dict[str, int]:
    depths = {}
    connection = await aio_pika.connect(amqp_url, timeout=10)
    async with connection:
        for name in names:
            channel = await connection.channel()
            queue = await channel.declare_queue(name, passive=True)
            depths[name] = queue.declaration_result.message_count or 0
            await channel.close()
    return depths


async def _consumers(amqp_url: str, name: str) -> int:
    connection = await aio_pika.connect(amqp_url, timeout=10)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(name, passive=True)
        return queue.declaration_result.consumer_count or 0


def consumer_count(amqp_url: str, queue: str) -> int:
    return asyncio.run(_consumers(amqp_url, queue))


def work_queues(prefix: str) -> list[str]:
    return [f"{prefix}.{consumer}{suffix}" for consumer in CONSUMER_QUEUES for suffix in ("", ".retry")]


async def _drain(amqp_url: str, name: str, limit: int) -> list[aio_pika.abc.AbstractIncomingMessage]:
    messages: list[aio_pika.abc.AbstractIncomingMessage] = []
    connection = await aio_pika.connect(amqp_url, timeout=10)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(name, passive=True)
        while len(messages) < limit:
            message = await queue.get(no_ack=True, fail=False, timeout=10)
            if message is None:
                break
            messages.append(message)
    return messages


@dataclass
class EventTally:
    """Per image: the distinct event ids seen on the tap, per kind, and all publications."""

    ids: dict[str, dict[str, set[str]]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(set)))
    publications: Counter[str] = field(default_factory=Counter)

    def add(self, envelope: events_pb2.Envelope) -> None:
        kind = envelope.WhichOneof("payload") or ""
        image_id = getattr(envelope, kind).image_id
        self.ids[image_id][kind].add(envelope.event_id)
        self.publications[kind] += 1

    def distinct(self, kind: str) -> int:
        return sum(len(kinds.get(kind, ())) for kinds in self.ids.values())


def drain_tap(amqp_url: str, limit: int) -> EventTally:
    tally = EventTally()
    for message in asyncio.run(_drain(amqp_url, TAP_QUEUE, limit)):
        tally.add(events_pb2.Envelope.FromString(message.body))
    return tally


def dead_letters(amqp_url: str, prefix: str, limit: int = 10_000) -> dict[str, list[dict[str, Any]]]:
    contents: dict[str, list[dict[str, Any]]] = {}
    for consumer in CONSUMER_QUEUES:
        name = f"{prefix}.{consumer}.dlq"
        entries = []
        for message in asyncio.run(_drain(amqp_url, name, limit)):
            entry: dict[str, Any] = {"type": message.type, "attempt": message.headers.get("x-attempt", 1)}
            try:
                envelope = events_pb2.Envelope.FromString(message.body)
                kind = envelope.WhichOneof("payload") or ""
                entry.update(type=envelope.type, image_id=getattr(envelope, kind).image_id, event_id=envelope.event_id)
            except Exception as error:  # an undecodable message is dead-lettered too; show it as such
                entry["undecodable"] = repr(error)
            entries.append(entry)
        contents[name] = entries
    return contents


# -- MongoDB and the bucket --------------------------------------------------------------------


@dataclass
class Stores:
    jobs: dict[str, dict[str, Any]]
    items: dict[str, dict[str, Any]]
    faces: Counter[str]


def read_stores(mongo_url: str) -> Stores:
    client: MongoClient[dict[str, Any]] = MongoClient(mongo_url, serverSelectionTimeoutMS=10_000)
    try:
        jobs = {doc["_id"]: doc for doc in client["facerestore_upload"]["jobs"].find({}, {"traceparent": 0})}
        items = {doc["_id"]: doc for doc in client["facerestore_history"]["items"].find({})}
        faces: Counter[str] = Counter(
            doc["image_id"] for doc in client["facerestore_history"]["faces"].find({}, {"image_id": 1})
        )
    finally:
        client.close()
    return Stores(jobs, items, faces)


def list_bucket(endpoint: str, bucket: str) -> list[str]:
    settings = StorageSettings(s3_endpoint=endpoint, s3_bucket=bucket)  # the services' credentials
    client = Minio(
        endpoint,
        access_key=settings.s3_access_key.get_secret_value(),
        secret_key=settings.s3_secret_key.get_secret_value(),
        secure=settings.s3_secure,
        region=settings.s3_region,
    )
    if not client.bucket_exists(bucket):
        return []
    return [obj.object_name or "" for obj in client.list_objects(bucket, recursive=True)]


# -- settling ----------------------------------------------------------------------------------


def settle(
    mongo_url: str,
    amqp_url: str,
    prefix: str,
    stall_seconds: float,
    limit_seconds: float,
    tick: Callable[[], None],
    interval: float = 2.0,
) -> float:
    """Wait until every job is published and ended (done or failed) in the history, and the work
    queues are empty. Waits as long as the backlog shrinks: gives up after `stall_seconds` without
    progress, or `limit_seconds` in all. Returns the seconds waited. `tick` runs on every look
    (the rig's supervision)."""
    started = last_progress = time.monotonic()
    calm = 0
    fewest: int | None = None
    while time.monotonic() - started < limit_seconds and time.monotonic() - last_progress < stall_seconds:
        tick()
        try:
            stores = read_stores(mongo_url)
            depths = asyncio.run(_queue_depths(amqp_url, work_queues(prefix)))
        except Exception:  # a store still coming back: look again
            calm = 0
            time.sleep(interval)
            continue
        open_jobs = sum(
            1
            for image_id, job in stores.jobs.items()
            if not job.get("published") or stores.items.get(image_id, {}).get("status") not in ("done", "failed")
        )
        if fewest is None or open_jobs < fewest:
            fewest, last_progress = open_jobs, time.monotonic()
        calm = calm + 1 if not open_jobs and not any(depths.values()) else 0
        if calm >= 2:
            break
        time.sleep(interval)
    return time.monotonic() - started


# -- the report --------------------------------------------------------------------------------


@dataclass
class Report:
    accepted: int
    done: int
    failed: int
    lost: int
    duplicated: int
    failed_without_reason: int
    deleted: int
    client_accepted: int
    client_retried: int
    client_gave_up: int
    client_refused: int
    unanswered_jobs: int
    failure_reasons: dict[str, int]
    lost_uploads: list[dict[str, Any]]
    duplicated_uploads: list[dict[str, Any]]
    orphan_blobs: list[str]
    missing_blobs: list[str]
    dead_letters: dict[str, list[dict[str, Any]]]
    outcome_publications: int
    outcome_distinct: int
    upload_publications: int
    upload_distinct: int
    queues_left: dict[str, int]
    settled_seconds: float

    @property
    def passed(self) -> bool:
        return self.lost == 0 and self.duplicated == 0 and self.failed_without_reason == 0

    def headline(self) -> str:
        return (
            f"{self.accepted} accepted, {self.done} done, {self.failed} failed, "
            f"{self.lost} lost, {self.duplicated} duplicated"
        )

    def lines(self) -> list[str]:
        reasons = ", ".join(f"{reason} {count}" for reason, count in sorted(self.failure_reasons.items())) or "none"
        dlq = "; ".join(
            f"{name}: {len(entries)}"
            + (f" ({', '.join(sorted({entry.get('image_id', '?')[:8] for entry in entries}))})" if entries else "")
            for name, entries in self.dead_letters.items()
        )
        lines = [
            self.headline(),
            f"failed with a reason: {self.failed - self.failed_without_reason} of {self.failed} ({reasons})",
            f"deleted by their users after they ended: {self.deleted}",
            f"orphan blobs: {len(self.orphan_blobs)}; results missing from the bucket: {len(self.missing_blobs)}",
            f"dead-letter queues: {dlq}",
            f"outcome events: {self.outcome_publications} published for {self.outcome_distinct} distinct events; "
            f"upload events: {self.upload_publications} published for {self.upload_distinct} distinct events "
            "(a repeat carries the same event id; consumers drop it)",
            f"client: {self.client_accepted} uploads answered 202 ({self.client_retried} after a retry), "
            f"{self.client_gave_up} given up, {self.client_refused} refused; "
            f"{self.unanswered_jobs} accepted without the client hearing of it",
            f"settled {self.settled_seconds:.0f} s after the load stopped; messages left in work queues: "
            f"{sum(self.queues_left.values())}",
        ]
        lines += [f"LOST {entry['id']}: {entry['why']}" for entry in self.lost_uploads[:20]]
        lines += [f"DUPLICATED {entry['key']}: {entry['why']}" for entry in self.duplicated_uploads[:20]]
        lines.append("PASS" if self.passed else "FAIL: lost or duplicated uploads, or a failure without a reason")
        return lines

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed, "headline": self.headline()}


def _blob_index(keys: Iterable[str]) -> tuple[dict[str, dict[str, list[str]]], list[str]]:
    """Objects by image id and kind, and the keys that belong to no image."""
    by_image: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    strays = []
    for key in keys:
        for kind, pattern in _KEY_PATTERNS:
            match = pattern.match(key)
            if match:
                by_image[match.group(1)][kind].append(key)
                break
        else:
            strays.append(key)
    return by_image, strays


def build_report(
    journal: list[dict[str, Any]],
    stores: Stores,
    blobs: list[str],
    events: EventTally,
    dead: dict[str, list[dict[str, Any]]],
    queues_left: dict[str, int],
    settled_seconds: float,
) -> Report:
    jobs = {image_id: job for image_id, job in stores.jobs.items() if str(job.get("note", "")).startswith(NOTE_PREFIX)}
    accepted_events = [entry for entry in journal if entry["e"] == "accepted"]
    client_ids = {entry["id"] for entry in accepted_events}
    ids_per_key: dict[str, set[str]] = defaultdict(set)
    for entry in accepted_events:
        ids_per_key[entry["key"]].add(entry["id"])
    jobs_per_key: dict[str, set[str]] = defaultdict(set)
    for image_id, job in jobs.items():
        jobs_per_key[str(job["note"]).removeprefix(NOTE_PREFIX)].add(image_id)
    key_of = {image_id: key for key, ids in jobs_per_key.items() for image_id in ids}
    blobs_by_image, strays = _blob_index(blobs)

    lost: list[dict[str, Any]] = []
    missing_blobs: list[str] = []
    done = failed = failed_without_reason = deleted = 0
    reasons: Counter[str] = Counter()
    for image_id in sorted(set(jobs) | client_ids):
        item = stores.items.get(image_id)
        if image_id not in jobs:
            lost.append({"id": image_id, "why": "the client was answered 202 but the platform has no job"})
            continue
        status = (item or {}).get("status", "none")
        if item is None or status not in ("done", "failed"):
            lost.append({"id": image_id, "why": f"never ended: history status {status}"})
            continue
        is_deleted = bool(item.get("deleted"))
        deleted += is_deleted
        if status == "failed":
            failed += 1
            reason = str(item.get("error") or "")
            reasons[reason or "(none)"] += 1
            failed_without_reason += not reason
            continue
        done += 1
        if not is_deleted:
            expected = [item.get(name, "") for name in RESULT_FIELDS]
            present = {key for keys in blobs_by_image.get(image_id, {}).values() for key in keys}
            absent = [key for key in expected if not key or key not in present]
            if absent:
                missing_blobs += absent
                lost.append({"id": image_id, "why": f"done, but not in the bucket: {', '.join(map(str, absent))}"})

    duplicated: dict[str, list[str]] = defaultdict(list)
    for key, ids in jobs_per_key.items():
        if len(ids) > 1:
            duplicated[key].append(f"{len(ids)} jobs for one Idempotency-Key")
    for key, ids in ids_per_key.items():
        if len(ids) > 1:
            duplicated[key].append(f"the client was given {len(ids)} image ids for one Idempotency-Key")
    for image_id, kinds in events.ids.items():
        outcomes = kinds.get("image_restored", set()) | kinds.get("image_failed", set())
        if len(outcomes) > 1:
            duplicated[key_of.get(image_id, image_id)].append(f"{len(outcomes)} distinct outcome events")
        elif kinds.get("image_restored") and kinds.get("image_failed"):
            duplicated[key_of.get(image_id, image_id)].append("both image.restored and image.failed published")
        if len(kinds.get("image_uploaded", set())) > 1:
            duplicated[key_of.get(image_id, image_id)].append("more than one distinct image.uploaded event")
    for image_id, count in stores.faces.items():
        reported = int(stores.items.get(image_id, {}).get("faces", 0))
        if count > reported:
            duplicated[key_of.get(image_id, image_id)].append(f"{count} faces stored, {reported} reported")
    for image_id, objects in blobs_by_image.items():
        if len(objects.get("original", [])) > 1:
            duplicated[key_of.get(image_id, image_id)].append("more than one original in the bucket")

    orphans = list(strays)
    for image_id, objects in blobs_by_image.items():
        owner = jobs.get(image_id) or stores.jobs.get(image_id)
        record = stores.items.get(image_id) or {}
        keep: set[str] = set()
        if owner is not None and not record.get("deleted"):
            keep.add(str(owner.get("original_key", "")))
            if record.get("status") == "done":
                keep.update(str(record.get(name, "")) for name in RESULT_FIELDS)
        orphans += [key for keys in objects.values() for key in keys if key not in keep]

    retried = sum(1 for entry in accepted_events if entry.get("attempts", 1) > 1)
    return Report(
        accepted=len(jobs),
        done=done,
        failed=failed,
        lost=len(lost),
        duplicated=len(duplicated),
        failed_without_reason=failed_without_reason,
        deleted=deleted,
        client_accepted=len(client_ids),
        client_retried=retried,
        client_gave_up=sum(1 for entry in journal if entry["e"] == "gave_up"),
        client_refused=sum(1 for entry in journal if entry["e"] == "refused"),
        unanswered_jobs=len(set(jobs) - client_ids),
        failure_reasons=dict(reasons),
        lost_uploads=lost,
        duplicated_uploads=[{"key": key, "why": "; ".join(why)} for key, why in duplicated.items()],
        orphan_blobs=sorted(orphans),
        missing_blobs=missing_blobs,
        dead_letters=dead,
        outcome_publications=events.publications["image_restored"] + events.publications["image_failed"],
        outcome_distinct=events.distinct("image_restored") + events.distinct("image_failed"),
        upload_publications=events.publications["image_uploaded"],
        upload_distinct=events.distinct("image_uploaded"),
        queues_left=queues_left,
        settled_seconds=settled_seconds,
    )


def queue_depths(amqp_url: str, prefix: str) -> dict[str, int]:
    return asyncio.run(_queue_depths(amqp_url, work_queues(prefix)))
