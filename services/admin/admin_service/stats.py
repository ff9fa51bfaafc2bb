"""GET /v1/admin/stats behind the transport: the period asked for, and the usage, model and
queue figures as messages."""

from __future__ import annotations

from dataclasses import dataclass

from admin_service.distribution import Summary
from admin_service.queues import QueueState
from admin_service.results import ModelSummary
from admin_service.usage import STEP_MS, UsageCounts
from facerestore.admin.v1 import admin_pb2
from facerestore_common.errors import InvalidArgument

# Without `from`: the last 24 hours (hour granularity) or 7 days (day granularity).
DEFAULT_BUCKETS = {"hour": 24, "day": 7}
# At most this many buckets per answer: a month of hours, two years of days.
MAX_BUCKETS = {"hour": 24 * 31, "day": 366 * 2}


@dataclass(frozen=True)
class Period:
    from_ms: int
    to_ms: int
    granularity: str


def period_of(request: admin_pb2.GetStatsRequest, now_ms: int) -> Period:
    """[from, to) rounded out to whole UTC buckets: `from` down, `to` up."""
    granularity = request.granularity or "day"
    if granularity not in STEP_MS:
        raise InvalidArgument("granularity must be day or hour", reason="validation-error")
    step = STEP_MS[granularity]
    to_ms = request.to.ToMilliseconds() if request.HasField("to") else now_ms
    to_ms = -(-to_ms // step) * step
    if request.HasField("from"):
        from_ms = getattr(request, "from").ToMilliseconds() // step * step
    else:
        from_ms = to_ms - DEFAULT_BUCKETS[granularity] * step
    if from_ms >= to_ms:
        raise InvalidArgument("`from` must be before `to`", reason="validation-error")
    if (to_ms - from_ms) // step > MAX_BUCKETS[granularity]:
        raise InvalidArgument(
            f"at most {MAX_BUCKETS[granularity]} {granularity}s at once; choose a shorter period or day granularity",
            reason="validation-error",
        )
    return Period(from_ms, to_ms, granularity)


def usage_message(counts: UsageCounts) -> admin_pb2.UsageCounts:
    return admin_pb2.UsageCounts(
        **counts.values, rate_limited_by_limit=counts.rate_limited_by_limit, active_users=counts.active_users
    )


def distribution_message(summary: Summary) -> admin_pb2.Distribution:
    return admin_pb2.Distribution(
        count=summary.count, mean=summary.mean, p5=summary.p5, p50=summary.p50, p95=summary.p95
    )


def model_message(model: ModelSummary) -> admin_pb2.ModelStats:
    return admin_pb2.ModelStats(
        model=model.model,
        images=model.images,
        done=model.done,
        failed=model.failed,
        failure_rate=model.failure_rate,
        failures_by_reason=model.failures_by_reason,
        duration_ms=distribution_message(model.duration_ms),
        stage_ms={stage: distribution_message(summary) for stage, summary in model.stage_ms.items()},
        faces_per_image=distribution_message(model.faces_per_image),
        identity_similarity=distribution_message(model.identity_similarity),
        sharpness_gain=distribution_message(model.sharpness_gain),
        ratings=model.ratings,
        mean_rating=model.mean_rating,
    )


def queue_message(state: QueueState) -> admin_pb2.QueueStats:
    return admin_pb2.QueueStats(
        consumer=state.consumer,
        queue=state.queue,
        messages=state.messages,
        consumers=state.consumers,
        retry_messages=state.retry_messages,
        dead_letter_messages=state.dead_letter_messages,
        available=state.available,
    )
