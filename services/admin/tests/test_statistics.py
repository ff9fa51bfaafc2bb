"""The admin service's statistics from the platform's events, on a real Mongo database: usage
bucketed by hour and day (sign-ups, sign-ins, codes, uploads, outcomes, refusals by limit, active
users, bytes), model performance per restorer and analyser (percentiles recomputable with
numpy), each user's activity, and nothing counted twice when an event is delivered twice."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aio_pika
import numpy as np
import pytest
from motor.motor_asyncio import AsyncIOMotorDatabase

from admin_service.distribution import Summary, percentile
from admin_service.moderation import ModerationQueue
from admin_service.projector import AdminProjector
from admin_service.results import ModelResults
from admin_service.timeline import Timeline
from admin_service.usage import DAY_MS, HOUR_MS, UsageLedger
from facerestore.events.v1 import events_pb2
from facerestore_common import mongo
from facerestore_common.activity import activity_envelope
from facerestore_common.events import EventBus
from facerestore_common.topology import CONSUMER_BINDINGS

ADMIN_BINDINGS = CONSUMER_BINDINGS["admin"]

DAY = 1_750_000_000_000 - 1_750_000_000_000 % DAY_MS  # a UTC midnight
T0 = DAY + 10 * HOUR_MS  # 10:00 that day


@pytest.fixture
async def database(mongo_url: str, unique_name: str) -> AsyncIterator[AsyncIOMotorDatabase]:
    db = mongo.connect(mongo_url, unique_name)
    yield db
    db.client.close()


@pytest.fixture
async def models(database: AsyncIOMotorDatabase) -> tuple[UsageLedger, ModelResults, Timeline, ModerationQueue]:
    repositories = (UsageLedger(database), ModelResults(database), Timeline(database), ModerationQueue(database))
    for repository in repositories:
        await repository.create_indexes()
    return repositories


@pytest.fixture
def project(models: tuple[UsageLedger, ModelResults, Timeline, ModerationQueue]) -> AdminProjector:
    return AdminProjector(*models)


def activity(event_id: str, kind: str, user_id: str, at_ms: int, count: int = 1, **labels: str) -> events_pb2.Envelope:
    return activity_envelope("test", event_id, kind, user_id=user_id, at_ms=at_ms, count=count, labels=labels)


def uploaded(event_id: str, image_id: str, user_id: str, at_ms: int, size: int) -> events_pb2.Envelope:
    envelope = events_pb2.Envelope(
        event_id=event_id,
        type="image.uploaded",
        image_uploaded=events_pb2.ImageUploaded(image_id=image_id, user_id=user_id, size_bytes=size),
    )
    envelope.image_uploaded.created_at.FromMilliseconds(at_ms)
    envelope.occurred_at.FromMilliseconds(at_ms)
    return envelope


def restored(
    event_id: str, image_id: str, user_id: str, at_ms: int, *, duration: float, faces: int, identity: float, gain: float
) -> events_pb2.Envelope:
    envelope = events_pb2.Envelope(
        event_id=event_id,
        type="image.restored",
        image_restored=events_pb2.ImageRestored(
            image_id=image_id,
            user_id=user_id,
            faces=faces,
            backend="classical",
            restorer_model="classical-v1",
            analyzer_model="dlib-resnet-v1",
            sharpness_before=10.0,
            sharpness_after=10.0 * gain,
            duration_ms=duration,
            identity_min=identity,
            stage_ms={"analyze": duration / 2, "restore": duration / 4},
            stored_bytes=1000,
        ),
    )
    envelope.occurred_at.FromMilliseconds(at_ms)
    return envelope


def failed(event_id: str, image_id: str, user_id: str, at_ms: int, reason: str) -> events_pb2.Envelope:
    envelope = events_pb2.Envelope(
        event_id=event_id,
        type="image.failed",
        image_failed=events_pb2.ImageFailed(
            image_id=image_id,
            user_id=user_id,
            reason=reason,
            restorer_model="classical-v1",
            analyzer_model="dlib-resnet-v1",
            backend="classical",
        ),
    )
    envelope.occurred_at.FromMilliseconds(at_ms)
    return envelope


def test_percentiles_interpolate_like_numpy() -> None:
    values = [812.0, 40.5, 77.0, 1503.2, 99.9, 240.0, 3.0]
    for q in (0, 5, 25, 50, 95, 100):
        assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))
    assert Summary.of([]) == Summary(0, 0.0, 0.0, 0.0, 0.0)
    assert Summary.of([2.0]) == Summary(1, 2.0, 2.0, 2.0, 2.0)


async def test_usage_is_counted_per_hour_and_day_and_once_per_event(
    project: AdminProjector, models: tuple[UsageLedger, ModelResults, Timeline, ModerationQueue]
) -> None:
    usage = models[0]
    events = [
        activity("a1", "user.signed_up", "alice", T0),
        activity("a2", "user.signed_in", "alice", T0 + 1),
        activity("a3", "code.sent", "", T0 + 2, channel="sms", provider="outbox"),
        activity("a4", "code.failed", "alice", T0 + 3, channel="sms", result="wrong"),
        activity("a5", "code.verified", "alice", T0 + 4, channel="sms"),
        activity("b1", "user.signed_in", "bob", T0 + HOUR_MS + 5),
        activity("b2", "search.made", "bob", T0 + HOUR_MS + 6, scope="own"),
        activity("g1", "rate_limit.refused", "", T0 + HOUR_MS, count=3, limit="uploads-per-user"),
        activity("g2", "rate_limit.refused", "", T0 + 2 * HOUR_MS, count=2, limit="requests-per-ip"),
        activity("x1", "code.send_failed", "", T0 + DAY_MS, channel="sms", provider="twilio"),
        uploaded("u1", "img-1", "alice", T0 + 10, size=5000),
        restored("r1", "img-1", "alice", T0 + 20, duration=800.0, faces=2, identity=0.9, gain=2.0),
        uploaded("u2", "img-2", "carol", T0 + 2 * HOUR_MS, size=7000),
        failed("f2", "img-2", "carol", T0 + 2 * HOUR_MS + 1, "original_missing"),
    ]
    for envelope in [*events, *events]:  # every event delivered twice
        await project(envelope)

    hours = await usage.report(DAY, DAY + DAY_MS, "hour")
    assert len(hours.series) == 24 and [start for start, _ in hours.series][:2] == [DAY, DAY + HOUR_MS]
    ten, eleven, twelve = (dict(hours.series)[T0 + n * HOUR_MS] for n in range(3))
    assert ten.values | {} == {
        **dict.fromkeys(ten.values, 0),
        "sign_ups": 1,
        "sign_ins": 1,
        "codes_sent": 1,
        "codes_failed": 1,
        "codes_verified": 1,
        "uploads": 1,
        "done": 1,
        "stored_bytes": 6000,
    }
    assert ten.active_users == 1  # alice
    assert (eleven.values["sign_ins"], eleven.values["searches"], eleven.values["rate_limited"]) == (1, 1, 3)
    assert eleven.active_users == 1  # bob
    assert (twelve.values["uploads"], twelve.values["failed"], twelve.values["rate_limited"]) == (1, 1, 2)
    assert twelve.active_users == 1  # carol
    assert hours.totals.values["code_send_failures"] == 0  # the next day

    days = await usage.report(DAY, DAY + 2 * DAY_MS, "day")
    (first, today), (second, tomorrow) = days.series
    assert (first, second) == (DAY, DAY + DAY_MS)
    assert today.values == hours.totals.values
    assert today.active_users == 3 and days.totals.active_users == 3
    assert tomorrow.values["code_send_failures"] == 1 and tomorrow.active_users == 0
    assert days.totals.rate_limited_by_limit == {"uploads-per-user": 3, "requests-per-ip": 2}
    assert days.totals.values["stored_bytes"] == 5000 + 1000 + 7000


async def test_models_report_counts_percentiles_failures_and_identity(
    project: AdminProjector, models: tuple[UsageLedger, ModelResults, Timeline, ModerationQueue]
) -> None:
    results = models[1]
    durations = [500.0, 900.0, 1300.0, 700.0]
    identities = [0.91, 0.62, 0.88]
    for n, duration in enumerate(durations):
        faces = 0 if n == 3 else n + 1
        identity = identities[n] if faces else 0.0
        await project(uploaded(f"u{n}", f"img-{n}", "alice", T0, size=100))
        await project(
            restored(
                f"r{n}", f"img-{n}", "alice", T0 + n, duration=duration, faces=faces, identity=identity, gain=1.5 + n
            )
        )
    await project(failed("f9", "img-9", "bob", T0 + 9, "retries_exhausted: S3Error"))
    await project(failed("f8", "img-8", "bob", T0 + 8, "original_missing"))
    await project(failed("f7", "img-7", "bob", T0 + DAY_MS, "original_missing"))  # outside the period

    (restorer,), (analyzer,) = await results.summaries(DAY, DAY + DAY_MS)
    assert restorer.model == "classical-v1" and analyzer.model == "dlib-resnet-v1"
    assert (restorer.images, restorer.done, restorer.failed) == (6, 4, 2)
    assert restorer.failure_rate == pytest.approx(2 / 6)
    assert restorer.failures_by_reason == {"retries_exhausted": 1, "original_missing": 1}
    assert restorer.duration_ms.p50 == pytest.approx(np.percentile(durations, 50))
    assert restorer.duration_ms.p95 == pytest.approx(np.percentile(durations, 95))
    assert restorer.stage_ms["analyze"].p50 == pytest.approx(np.percentile([d / 2 for d in durations], 50))
    assert restorer.faces_per_image.mean == pytest.approx(np.mean([1, 2, 3, 0]))
    assert restorer.identity_similarity.count == 3  # the image without faces has no identity to keep
    assert restorer.identity_similarity.p5 == pytest.approx(np.percentile(identities, 5))
    assert restorer.identity_similarity.p50 == pytest.approx(np.percentile(identities, 50))
    assert restorer.sharpness_gain.mean == pytest.approx(np.mean([1.5, 2.5, 3.5, 4.5]))
    assert (restorer.ratings, restorer.mean_rating) == (0, 0.0)
    assert analyzer.images == 6


async def test_each_user_has_an_activity_timeline_and_deletions_free_bytes(
    project: AdminProjector, models: tuple[UsageLedger, ModelResults, Timeline, ModerationQueue]
) -> None:
    usage, _, timeline, _ = models
    await project(activity("s1", "user.signed_in", "alice", T0, channel="sms"))
    await project(activity("c1", "code.sent", "alice", T0 + 1, channel="sms", provider="outbox"))
    await project(uploaded("u1", "img-1", "alice", T0 + 2, size=4000))
    await project(restored("r1", "img-1", "alice", T0 + 3, duration=10, faces=1, identity=0.9, gain=2))
    await project(activity("q1", "search.made", "alice", T0 + 4, scope="own"))
    await project(activity("b1", "user.banned", "alice", T0 + 5, via="admin"))
    deleted = events_pb2.Envelope(
        event_id="d1",
        type="image.deleted",
        image_deleted=events_pb2.ImageDeleted(image_id="img-1", user_id="alice", deleted_by="admin"),
    )
    deleted.occurred_at.FromMilliseconds(T0 + 6)
    await project(deleted)
    await project(deleted)

    entries, cursor = await timeline.page("alice", 3, "")
    assert [entry.kind for entry in entries] == ["image.deleted", "user.banned", "search.made"]
    rest, end = await timeline.page("alice", 10, cursor)
    assert [entry.kind for entry in rest] == ["image.uploaded", "user.signed_in"] and end == ""
    assert entries[0].details == {"image_id": "img-1", "deleted_by": "admin"}
    assert await timeline.counts("alice") == {
        "user.signed_in": 1,
        "image.uploaded": 1,
        "search.made": 1,
        "user.banned": 1,
        "image.deleted": 1,
    }
    report = await usage.report(DAY, DAY + DAY_MS, "day")
    assert report.totals.values["freed_bytes"] == 4000 + 1000

    erased = events_pb2.Envelope(
        event_id="e1", type="user.deleted", user_deleted=events_pb2.UserDeleted(user_id="alice")
    )
    await project(erased)
    assert await timeline.counts("alice") == {}
    after = await usage.report(DAY, DAY + DAY_MS, "day")
    assert after.totals.values == report.totals.values and after.totals.active_users == 1


def rated(event_id: str, image_id: str, user_id: str, at_ms: int, rating: int) -> events_pb2.Envelope:
    envelope = events_pb2.Envelope(
        event_id=event_id,
        type="feedback.given",
        feedback_given=events_pb2.FeedbackGiven(image_id=image_id, user_id=user_id, rating=rating),
    )
    envelope.feedback_given.given_at.FromMilliseconds(at_ms)
    envelope.occurred_at.FromMilliseconds(at_ms)
    return envelope


async def test_ratings_give_a_mean_per_model_and_low_ones_open_moderation_cases(
    project: AdminProjector, models: tuple[UsageLedger, ModelResults, Timeline, ModerationQueue]
) -> None:
    usage, results, timeline, moderation = models
    for n in range(3):
        await project(uploaded(f"u{n}", f"img-{n}", "alice", T0, size=100))
        await project(restored(f"r{n}", f"img-{n}", "alice", T0 + n, duration=100, faces=1, identity=0.9, gain=2))
    await project(rated("f1", "img-0", "alice", T0 + 10, 5))
    await project(rated("f2", "img-1", "alice", T0 + 20, 4))
    await project(rated("f4", "img-1", "alice", T0 + 40, 1))  # a new rating replaces the old...
    await project(rated("f3", "img-1", "alice", T0 + 30, 3))  # ...even when an older one arrives later
    await project(rated("f4", "img-1", "alice", T0 + 40, 1))  # redelivered

    (restorer,), _ = await results.summaries(DAY, DAY + DAY_MS)
    assert (restorer.ratings, restorer.mean_rating) == (2, pytest.approx((5 + 1) / 2))
    report = await usage.report(DAY, DAY + DAY_MS, "day")
    assert report.totals.values["ratings"] == 4 and report.totals.active_users == 1
    (case,), _ = await moderation.page("open", 10, "")
    assert (case.image_id, case.low_ratings, case.lowest_rating, case.reports) == ("img-1", 1, 1, 0)
    assert (await timeline.counts("alice"))["feedback.given"] == 4


# --- versions: an image restored more than once ------------------------------------------------

CODEFORMER = "codeformer-v0.1.0"


def requested(event_id: str, image_id: str, user_id: str, at_ms: int, restoration_id: str) -> events_pb2.Envelope:
    envelope = events_pb2.Envelope(
        event_id=event_id,
        type="restoration.requested",
        restoration_requested=events_pb2.RestorationRequested(
            image_id=image_id,
            user_id=user_id,
            restoration_id=restoration_id,
            options=events_pb2.RestorationOptions(model="codeformer", fidelity=0.7),
        ),
    )
    envelope.restoration_requested.requested_at.FromMilliseconds(at_ms)
    envelope.occurred_at.FromMilliseconds(at_ms)
    return envelope


def version_restored(
    event_id: str, image_id: str, user_id: str, at_ms: int, restoration_id: str, *, duration: float, identity: float
) -> events_pb2.Envelope:
    """A later version's outcome, made by CodeFormer."""
    envelope = restored(event_id, image_id, user_id, at_ms, duration=duration, faces=1, identity=identity, gain=3.0)
    event = envelope.image_restored
    event.restoration_id = restoration_id
    event.restorer_model, event.backend = CODEFORMER, "codeformer"
    event.options.model = "codeformer"
    event.stored_bytes = 2000
    return envelope


def version_failed(
    event_id: str, image_id: str, user_id: str, at_ms: int, restoration_id: str, reason: str
) -> events_pb2.Envelope:
    envelope = failed(event_id, image_id, user_id, at_ms, reason)
    event = envelope.image_failed
    event.restoration_id = restoration_id
    event.restorer_model, event.backend = CODEFORMER, "codeformer"
    return envelope


def deleted_event(
    event_id: str, image_id: str, user_id: str, at_ms: int, freed_bytes: int | None = None
) -> events_pb2.Envelope:
    """`freed_bytes` None: as history published it before it measured the bucket."""
    envelope = events_pb2.Envelope(
        event_id=event_id,
        type="image.deleted",
        image_deleted=events_pb2.ImageDeleted(image_id=image_id, user_id=user_id, deleted_by="user"),
    )
    if freed_bytes is not None:
        envelope.image_deleted.freed_bytes = freed_bytes
    envelope.occurred_at.FromMilliseconds(at_ms)
    return envelope


async def test_every_version_counts_once_for_the_model_that_made_it(
    project: AdminProjector, models: tuple[UsageLedger, ModelResults, Timeline, ModerationQueue]
) -> None:
    usage, results, _, _ = models
    events = [
        # img-1: classical first, then CodeFormer twice (r2 done, r3 failed).
        uploaded("u1", "img-1", "alice", T0, size=5000),
        restored("r1", "img-1", "alice", T0 + 1, duration=400.0, faces=1, identity=0.8, gain=2.0),
        requested("q2", "img-1", "alice", T0 + HOUR_MS, "r2"),
        version_restored("o2", "img-1", "alice", T0 + HOUR_MS + 1, "r2", duration=2600.0, identity=0.95),
        requested("q3", "img-1", "alice", T0 + HOUR_MS + 2, "r3"),
        version_failed("o3", "img-1", "alice", T0 + HOUR_MS + 3, "r3", "retries_exhausted: S3Error"),
        # img-2: its first restoration failed, its second (CodeFormer) is done.
        uploaded("u2", "img-2", "bob", T0 + 5, size=7000),
        failed("f2", "img-2", "bob", T0 + 6, "original_missing"),
        requested("q4", "img-2", "bob", T0 + HOUR_MS + 4, "r2"),
        version_restored("o4", "img-2", "bob", T0 + HOUR_MS + 5, "r2", duration=3000.0, identity=0.75),
    ]
    for envelope in [*events, *reversed(events)]:  # delivered twice, the second time in reverse order
        await project(envelope)

    classical, codeformer = (await results.summaries(DAY, DAY + DAY_MS))[0]
    assert (classical.model, codeformer.model) == ("classical-v1", CODEFORMER)
    assert (classical.images, classical.done, classical.failed) == (2, 1, 1)
    assert classical.failures_by_reason == {"original_missing": 1}
    assert classical.duration_ms == Summary.of([400.0])
    assert classical.identity_similarity == Summary.of([0.8])
    assert (codeformer.images, codeformer.done, codeformer.failed) == (3, 2, 1)
    assert codeformer.failures_by_reason == {"retries_exhausted": 1}
    assert codeformer.failure_rate == pytest.approx(1 / 3)
    assert codeformer.duration_ms.p50 == pytest.approx(np.percentile([2600.0, 3000.0], 50))
    assert codeformer.identity_similarity.p5 == pytest.approx(np.percentile([0.95, 0.75], 5))
    assert codeformer.sharpness_gain == Summary.of([3.0, 3.0])
    (analyzer,) = (await results.summaries(DAY, DAY + DAY_MS))[1]
    assert (analyzer.images, analyzer.done, analyzer.failed) == (5, 3, 2)

    # Usage counts images: two uploads, each counted done or failed once, by its first restoration.
    report = await usage.report(DAY, DAY + DAY_MS, "hour")
    totals = report.totals.values
    assert (totals["uploads"], totals["done"], totals["failed"], totals["restorations_requested"]) == (2, 1, 1, 3)
    assert totals["stored_bytes"] == 5000 + 1000 + 7000 + 2000 + 2000  # originals, r1's and both r2s' results
    ten, eleven = dict(report.series)[T0], dict(report.series)[T0 + HOUR_MS]
    assert (ten.values["uploads"], ten.values["done"], ten.values["failed"]) == (2, 1, 1)
    assert (eleven.values["restorations_requested"], eleven.values["done"], eleven.values["failed"]) == (3, 0, 0)
    assert eleven.active_users == 2  # asking for another version is activity


async def test_a_rating_counts_for_the_model_it_names(
    project: AdminProjector, models: tuple[UsageLedger, ModelResults, Timeline, ModerationQueue]
) -> None:
    results = models[1]
    await project(uploaded("u1", "img-1", "alice", T0, size=100))
    await project(restored("r1", "img-1", "alice", T0 + 1, duration=100, faces=1, identity=0.9, gain=2))
    await project(requested("q2", "img-1", "alice", T0 + 2, "r2"))
    await project(version_restored("o2", "img-1", "alice", T0 + 3, "r2", duration=200, identity=0.9))
    # Alice prefers r2 and rates it: history names the models of the version the image shows.
    rating = rated("f1", "img-1", "alice", T0 + 10, 2)
    rating.feedback_given.restorer_model, rating.feedback_given.analyzer_model = CODEFORMER, "dlib-resnet-v1"
    await project(rating)
    await project(rating)

    (classical, codeformer), (analyzer,) = await results.summaries(DAY, DAY + DAY_MS)
    assert (classical.ratings, classical.mean_rating) == (0, 0.0)
    assert (codeformer.ratings, codeformer.mean_rating) == (1, 2.0)
    assert (analyzer.ratings, analyzer.mean_rating) == (1, 2.0)


async def test_deleting_an_image_marks_every_version_deleted_and_frees_their_bytes(
    project: AdminProjector,
    models: tuple[UsageLedger, ModelResults, Timeline, ModerationQueue],
    database: AsyncIOMotorDatabase,
) -> None:
    usage = models[0]
    # Written before versions existed: no image or restoration id in the document.
    await database["results"].insert_one(
        {
            "_id": "img-1",
            "user_id": "alice",
            "uploaded_at_ms": T0,
            "original_bytes": 5000,
            "status": "done",
            "finished_at_ms": T0 + 1,
            "restorer_model": "classical-v1",
            "analyzer_model": "dlib-resnet-v1",
            "duration_ms": 100.0,
            "faces": 1,
            "identity_min": 0.9,
            "result_bytes": 1000,
            "deleted": False,
            "rated_at_ms": 0,
        }
    )
    await project(requested("q2", "img-1", "alice", T0 + 2, "r2"))
    await project(version_restored("o2", "img-1", "alice", T0 + 3, "r2", duration=200, identity=0.9))
    await project(requested("q3", "img-1", "alice", T0 + 4, "r3"))  # still being restored
    await project(uploaded("u9", "img-9", "alice", T0 + 5, size=100))  # another image stays

    (classical, codeformer), _ = await models[1].summaries(DAY, DAY + DAY_MS)
    assert (classical.images, codeformer.images) == (1, 1)  # the old document reads as the first version

    await project(deleted_event("d1", "img-1", "alice", T0 + 6))
    await project(deleted_event("d1", "img-1", "alice", T0 + 6))  # redelivered
    await project(deleted_event("d2", "img-1", "alice", T0 + 7))  # deleted again by another event
    # r3 finishes after its image was deleted, and r4's outcome comes without its request.
    await project(version_restored("o3", "img-1", "alice", T0 + 8, "r3", duration=300, identity=0.9))
    await project(version_failed("o4", "img-1", "alice", T0 + 9, "r4", "original_missing"))

    docs = {doc["_id"]: doc["deleted"] for doc in await database["results"].find({}, {"deleted": 1}).to_list(None)}
    assert docs == {"img-1": True, "img-1/r2": True, "img-1/r3": True, "img-1/r4": True, "img-9": False}
    report = await usage.report(DAY, DAY + DAY_MS, "day")
    # An event without history's measure (published before it measured): the estimate from what
    # was written, the original, r1's and r2's results.
    assert report.totals.values["freed_bytes"] == 5000 + 1000 + 2000
    # Deleted or not, what each restoration did still counts for its model.
    (classical, codeformer), _ = await models[1].summaries(DAY, DAY + DAY_MS)
    assert (classical.images, codeformer.images, codeformer.done, codeformer.failed) == (1, 3, 2, 1)


async def test_a_deletion_frees_the_bytes_history_measured_in_the_bucket(
    project: AdminProjector,
    models: tuple[UsageLedger, ModelResults, Timeline, ModerationQueue],
    database: AsyncIOMotorDatabase,
) -> None:
    usage = models[0]
    # Each version's results as the worker reports them: its own files and the original's
    # thumbnail, which every version rewrites (one object in the bucket, written three times).
    await project(uploaded("u1", "img-1", "alice", T0, size=5000))
    await project(restored("r1", "img-1", "alice", T0 + 1, duration=100, faces=1, identity=0.9, gain=2))
    for number in (2, 3):
        await project(requested(f"q{number}", "img-1", "alice", T0 + 2 * number, f"r{number}"))
        await project(
            version_restored(
                f"o{number}", "img-1", "alice", T0 + 2 * number + 1, f"r{number}", duration=200, identity=0.9
            )
        )
    written = (await usage.report(DAY, DAY + DAY_MS, "day")).totals.values["stored_bytes"]
    assert written == 5000 + 1000 + 2000 + 2000
    # What history found in the bucket just before removing the image's files.
    in_bucket = 8400

    await project(deleted_event("d1", "img-1", "alice", T0 + 10, freed_bytes=in_bucket))
    await project(deleted_event("d1", "img-1", "alice", T0 + 10, freed_bytes=in_bucket))  # redelivered

    report = await usage.report(DAY, DAY + DAY_MS, "day")
    assert report.totals.values["freed_bytes"] == in_bucket
    deleted = await database["results"].find({"image_id": "img-1"}, {"deleted": 1}).to_list(None)
    assert len(deleted) == 3 and all(doc["deleted"] for doc in deleted)

    # An image whose files were gone already frees nothing, though its results said they were written.
    await project(uploaded("u2", "img-2", "alice", T0 + 20, size=3000))
    await project(deleted_event("d2", "img-2", "alice", T0 + 21, freed_bytes=0))
    again = await usage.report(DAY, DAY + DAY_MS, "day")
    assert again.totals.values["freed_bytes"] == in_bucket


async def test_a_version_asked_for_is_in_its_users_activity(
    project: AdminProjector, models: tuple[UsageLedger, ModelResults, Timeline, ModerationQueue]
) -> None:
    timeline = models[2]
    await project(uploaded("u1", "img-1", "alice", T0, size=100))
    await project(restored("r1", "img-1", "alice", T0 + 1, duration=100, faces=1, identity=0.9, gain=2))
    await project(requested("q2", "img-1", "alice", T0 + 2, "r2"))
    await project(requested("q2", "img-1", "alice", T0 + 2, "r2"))  # redelivered
    await project(requested("q3", "img-1", "alice", T0 + 3, "r3"))
    await project(version_restored("o2", "img-1", "alice", T0 + 4, "r2", duration=200, identity=0.9))

    entries, cursor = await timeline.page("alice", 10, "")
    assert [entry.kind for entry in entries] == ["restoration.requested", "restoration.requested", "image.uploaded"]
    assert cursor == ""
    assert [entry.at_ms for entry in entries] == [T0 + 3, T0 + 2, T0]
    assert entries[0].details == {"image_id": "img-1", "restoration_id": "r3", "model": "codeformer"}
    assert entries[1].details == {"image_id": "img-1", "restoration_id": "r2", "model": "codeformer"}
    assert await timeline.counts("alice") == {"image.uploaded": 1, "restoration.requested": 2}

    await project(
        events_pb2.Envelope(event_id="e1", type="user.deleted", user_deleted=events_pb2.UserDeleted(user_id="alice"))
    )
    assert await timeline.counts("alice") == {}


async def test_the_admin_queue_gets_reprocess_requests_whatever_model_they_name(
    amqp_url: str, unique_name: str
) -> None:
    bus = EventBus(amqp_url, f"{unique_name}.events", unique_name, "test", topology={"admin": ADMIN_BINDINGS})
    await bus.connect()
    connection = await aio_pika.connect(amqp_url)
    received = []
    try:
        with_model = requested("q1", "img-1", "alice", T0, "r2")
        without_options = requested("q2", "img-2", "bob", T0, "r2")  # published before options existed
        without_options.restoration_requested.ClearField("options")
        for envelope in (with_model, without_options):
            await bus.publish(envelope)
        channel = await connection.channel()
        queue = await channel.get_queue(bus.queue_name("admin"))
        while (message := await queue.get(fail=False, timeout=5)) is not None:
            received.append((message.routing_key, events_pb2.Envelope.FromString(message.body).event_id))
            await message.ack()
    finally:
        await bus.close()
        channel = await connection.channel()
        for name in bus.consumer_queues("admin"):
            await channel.queue_delete(name)
        for exchange in (f"{unique_name}.events", f"{unique_name}.events.dlx"):
            await channel.exchange_delete(exchange)
        await connection.close()
    assert received == [("restoration.requested.codeformer", "q1"), ("restoration.requested", "q2")]
