"""The admin API's bodies for statistics, users' activity, the audit log and moderation."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from gateway_service.schemas import AdminImageOut, UserOut


class UsageCountsOut(BaseModel):
    sign_ups: int = Field(description="Users created by their first sign-in")
    sign_ins: int = Field(description="Sessions started (phone or email)")
    codes_sent: int = Field(description="Sign-in and confirmation codes the provider took")
    codes_verified: int
    codes_failed: int = Field(description="Verifications refused: a wrong, used or expired code")
    code_send_failures: int = Field(description="Codes the SMS or email provider did not take")
    uploads: int = Field(description="Uploads accepted")
    restorations_requested: int = Field(
        description="Later versions of stored images asked for (POST /v1/images/{id}/restorations)"
    )
    done: int = Field(description="Uploaded images whose restoration ended done (their first version)")
    failed: int = Field(description="Uploaded images whose restoration ended failed (their first version)")
    rate_limited: int = Field(description="Requests refused by a rate limit (429)")
    rate_limited_by_limit: dict[str, int] = Field(default={}, description="Totals only: refusals per limit")
    active_users: int = Field(
        description="Distinct users who signed in, uploaded, asked for a version, searched, reported or rated"
    )
    stored_bytes: int = Field(description="Bytes written to storage: originals and results")
    freed_bytes: int = Field(
        description="Bytes freed by deleting images: what their files took in storage, each file once"
    )
    searches: int
    reports: int = Field(description="Results reported by their owners")
    ratings: int = Field(description="Ratings given to results")


class UsageBucketOut(UsageCountsOut):
    start: datetime = Field(description="Start of the bucket (a whole UTC hour or day)")


class UsageOut(BaseModel):
    totals: UsageCountsOut
    series: list[UsageBucketOut] = Field(description="One bucket per hour or day of the period, oldest first")


class DistributionOut(BaseModel):
    count: int
    mean: float
    p5: float
    p50: float
    p95: float


class ModelStatsOut(BaseModel):
    model: str
    images: int = Field(description="Restorations that finished with this model (every version counts): done + failed")
    done: int
    failed: int
    failure_rate: float = Field(description="failed / images")
    failures_by_reason: dict[str, int] = Field(description='e.g. {"original_missing": 1}')
    duration_ms: DistributionOut = Field(description="Of done images: total milliseconds")
    stage_ms: dict[str, DistributionOut] = Field(description="Milliseconds per pipeline stage")
    faces_per_image: DistributionOut
    identity_similarity: DistributionOut = Field(
        description="Each image's lowest face identity similarity (before vs after), images with faces"
    )
    sharpness_gain: DistributionOut
    ratings: int
    mean_rating: float | None = Field(
        description="Mean feedback rating of the results this model made (the version rated); null without ratings"
    )


class ModelsOut(BaseModel):
    restorers: list[ModelStatsOut]
    analyzers: list[ModelStatsOut]


class QueueOut(BaseModel):
    consumer: str = Field(description="The consuming service, or embed")
    queue: str
    messages: int = Field(description="Messages waiting for a consumer")
    consumers: int
    retry_messages: int = Field(description="Messages waiting in the delay queue for another try")
    dead_letter_messages: int = Field(description="Messages given up on")
    available: bool = Field(description="False when the broker did not answer")


class StatsOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    users: int
    admins: int
    images_total: int
    images_by_status: dict[str, int]
    faces_total: int
    mean_sharpness_gain: float
    mean_duration_ms: float
    moderation_actions: int
    generated_at: datetime
    from_: datetime = Field(alias="from", description="Start of the period (inclusive, a whole bucket)")
    to: datetime = Field(description="End of the period (exclusive, a whole bucket)")
    granularity: Literal["day", "hour"]
    usage: UsageOut
    models: ModelsOut = Field(description="Over the images that finished in the period")
    queues: list[QueueOut] = Field(description="Live, from the broker")


class ActivityEntryOut(BaseModel):
    kind: str = Field(
        description=(
            "user.signed_up, user.signed_in, user.role_changed, user.banned, user.unbanned, image.uploaded, "
            "restoration.requested (a later version asked for), image.deleted, image.reported, search.made "
            "or feedback.given"
        )
    )
    at: datetime
    details: dict[str, str]


class UserActivityOut(BaseModel):
    user: UserOut
    activity_counts: dict[str, int] = Field(
        description="All-time counts by kind (the kinds of `activity`; a kind the user never did is absent)"
    )
    activity: list[ActivityEntryOut] = Field(description="Newest first")
    next_cursor: str | None


class AuditEntryOut(BaseModel):
    id: str
    actor_id: str
    action: str = Field(description="e.g. image.hide, image.show, image.delete, moderation.dismiss, user.ban")
    target: str
    details: dict[str, Any] = Field(description="What the action recorded, the reason among it")
    at: datetime


class AuditPage(BaseModel):
    items: list[AuditEntryOut]
    next_cursor: str | None


class ModerationCaseOut(BaseModel):
    image_id: str
    user_id: str = Field(description="The image's owner")
    status: Literal["open", "resolved"]
    reports: int
    report_reasons: dict[str, int]
    low_ratings: int
    lowest_rating: int | None
    hidden: bool = Field(description="Hidden pending review")
    opened_at: datetime
    updated_at: datetime
    resolution: Literal["hidden", "shown", "deleted", "dismissed"] | None = None
    resolution_reason: str = ""
    resolved_by: str | None = None
    image: AdminImageOut | None = Field(default=None, description="The image; null once it is deleted")


class ModerationPage(BaseModel):
    items: list[ModerationCaseOut]
    next_cursor: str | None


class ReasonRequest(BaseModel):
    reason: str = Field(min_length=1, max_length=500, description="Kept in the audit log")


class ReportRequest(BaseModel):
    reason: Literal["inappropriate", "wrong-person", "poor-quality", "other"]
    note: str = Field(default="", max_length=500)
