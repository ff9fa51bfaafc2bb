"""Admin messages (statistics, activity, audit, moderation) to public API bodies."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import Request
from google.protobuf.json_format import MessageToDict
from google.protobuf.timestamp_pb2 import Timestamp

from facerestore.admin.v1 import admin_pb2
from gateway_service.admin_schemas import (
    ActivityEntryOut,
    AuditEntryOut,
    DistributionOut,
    ModelsOut,
    ModelStatsOut,
    ModerationCaseOut,
    QueueOut,
    StatsOut,
    UsageBucketOut,
    UsageCountsOut,
    UsageOut,
)
from gateway_service.convert import admin_image_out

COUNTS = (
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
    "active_users",
    "stored_bytes",
    "freed_bytes",
    "searches",
    "reports",
    "ratings",
)


def _at(stamp: Timestamp) -> datetime:
    return stamp.ToDatetime(tzinfo=UTC)


def _counts(counts: admin_pb2.UsageCounts) -> dict[str, Any]:
    return {
        **{name: getattr(counts, name) for name in COUNTS},
        "rate_limited_by_limit": dict(counts.rate_limited_by_limit),
    }


def _distribution(value: admin_pb2.Distribution) -> DistributionOut:
    return DistributionOut(count=value.count, mean=value.mean, p5=value.p5, p50=value.p50, p95=value.p95)


def _model(model: admin_pb2.ModelStats) -> ModelStatsOut:
    return ModelStatsOut(
        model=model.model,
        images=model.images,
        done=model.done,
        failed=model.failed,
        failure_rate=model.failure_rate,
        failures_by_reason=dict(model.failures_by_reason),
        duration_ms=_distribution(model.duration_ms),
        stage_ms={stage: _distribution(value) for stage, value in model.stage_ms.items()},
        faces_per_image=_distribution(model.faces_per_image),
        identity_similarity=_distribution(model.identity_similarity),
        sharpness_gain=_distribution(model.sharpness_gain),
        ratings=model.ratings,
        mean_rating=model.mean_rating if model.ratings else None,
    )


def stats_out(response: admin_pb2.GetStatsResponse) -> StatsOut:
    return StatsOut(
        users=response.users,
        admins=response.admins,
        images_total=response.images_total,
        images_by_status=dict(response.images_by_status),
        faces_total=response.faces_total,
        mean_sharpness_gain=response.mean_sharpness_gain,
        mean_duration_ms=response.mean_duration_ms,
        moderation_actions=response.moderation_actions,
        generated_at=_at(response.generated_at),
        **{"from": _at(getattr(response, "from"))},
        to=_at(response.to),
        granularity=response.granularity,  # type: ignore[arg-type]
        usage=UsageOut(
            totals=UsageCountsOut(**_counts(response.usage_totals)),
            series=[
                UsageBucketOut(start=_at(bucket.start), **{**_counts(bucket.counts), "rate_limited_by_limit": {}})
                for bucket in response.usage_series
            ],
        ),
        models=ModelsOut(
            restorers=[_model(model) for model in response.restorers],
            analyzers=[_model(model) for model in response.analyzers],
        ),
        queues=[
            QueueOut(
                consumer=queue.consumer,
                queue=queue.queue,
                messages=queue.messages,
                consumers=queue.consumers,
                retry_messages=queue.retry_messages,
                dead_letter_messages=queue.dead_letter_messages,
                available=queue.available,
            )
            for queue in response.queues
        ],
    )


def activity_out(entry: admin_pb2.ActivityEntry) -> ActivityEntryOut:
    return ActivityEntryOut(kind=entry.kind, at=_at(entry.at), details=dict(entry.details))


def audit_out(entry: admin_pb2.AuditEntry) -> AuditEntryOut:
    return AuditEntryOut(
        id=entry.id,
        actor_id=entry.actor_id,
        action=entry.action,
        target=entry.target,
        details=MessageToDict(entry.details),
        at=_at(entry.at),
    )


def case_out(case: admin_pb2.ModerationCase, request: Request) -> ModerationCaseOut:
    return ModerationCaseOut(
        image_id=case.image_id,
        user_id=case.user_id,
        status=case.status,  # type: ignore[arg-type]
        reports=case.reports,
        report_reasons=dict(case.report_reasons),
        low_ratings=case.low_ratings,
        lowest_rating=case.lowest_rating or None,
        hidden=case.hidden,
        opened_at=_at(case.opened_at),
        updated_at=_at(case.updated_at),
        resolution=case.resolution or None,  # type: ignore[arg-type]
        resolution_reason=case.resolution_reason,
        resolved_by=case.resolved_by or None,
        image=admin_image_out(case.image, request) if case.HasField("image") else None,
    )
