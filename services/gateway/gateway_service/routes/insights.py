"""Admins read what happens: usage and model statistics, one user's activity, the audit log."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import Query
from google.protobuf.timestamp_pb2 import Timestamp

from facerestore.admin.v1 import admin_pb2
from facerestore_common.grpc_client import call_metadata
from gateway_service.admin_convert import activity_out, audit_out, stats_out
from gateway_service.admin_schemas import AuditPage, StatsOut, UserActivityOut
from gateway_service.convert import user_out
from gateway_service.dependencies import AdminUser, AppSettings, Clients
from gateway_service.openapi_document import api_router
from gateway_service.responses import FORBIDDEN, INVALID, NOT_FOUND, UNAUTHORIZED, Responses

router = api_router("admin")
_admin_errors: Responses = {401: UNAUTHORIZED, 403: FORBIDDEN}

Limit = Annotated[int, Query(ge=1, le=200)]
Cursor = Annotated[str | None, Query(max_length=200)]
Time = Annotated[datetime | None, Query(description="ISO 8601; without an offset it is UTC")]


def _timestamp(value: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime((value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC))
    return stamp


def _period(
    message: admin_pb2.GetStatsRequest | admin_pb2.ListAuditRequest, start: datetime | None, end: datetime | None
) -> None:
    if start is not None:
        getattr(message, "from").CopyFrom(_timestamp(start))
    if end is not None:
        message.to.CopyFrom(_timestamp(end))


@router.get(
    "/v1/admin/stats",
    response_model=StatsOut,
    summary="Usage over a period (totals and one bucket per hour or day), model performance, live queues",
    responses={**_admin_errors, 422: INVALID},
)
async def stats(
    admin: AdminUser,
    clients: Clients,
    settings: AppSettings,
    from_: Annotated[
        datetime | None,
        Query(
            alias="from",
            description="Start (inclusive, rounded down to the bucket); default: 7 days or 24 hours before `to`",
        ),
    ] = None,
    to: Annotated[datetime | None, Query(description="End (exclusive, rounded up to the bucket); default: now")] = None,
    granularity: Annotated[Literal["day", "hour"], Query(description="Bucket size, in UTC")] = "day",
) -> StatsOut:
    request = admin_pb2.GetStatsRequest(granularity=granularity)
    _period(request, from_, to)
    response = await clients.admin.GetStats(
        request, timeout=settings.grpc_deadline_seconds, metadata=call_metadata(admin.token)
    )
    return stats_out(response)


@router.get(
    "/v1/admin/users/{user_id}",
    response_model=UserActivityOut,
    summary=(
        "One user with their activity: sign-ins, uploads, versions requested, deletions, searches, reports, "
        "ratings, bans, role changes"
    ),
    responses={**_admin_errors, 404: NOT_FOUND},
)
async def get_user(
    user_id: str, admin: AdminUser, clients: Clients, settings: AppSettings, limit: Limit = 50, cursor: Cursor = None
) -> UserActivityOut:
    response = await clients.admin.GetUser(
        admin_pb2.GetUserRequest(user_id=user_id, limit=limit, cursor=cursor or ""),
        timeout=settings.grpc_deadline_seconds,
        metadata=call_metadata(admin.token),
    )
    return UserActivityOut(
        user=user_out(response.user),
        activity_counts=dict(response.activity_counts),
        activity=[activity_out(entry) for entry in response.activity],
        next_cursor=response.next_cursor or None,
    )


@router.get(
    "/v1/admin/audit",
    response_model=AuditPage,
    summary="The audit log, newest first, filtered by actor, action, target and time",
    responses={**_admin_errors, 422: INVALID},
)
async def list_audit(
    admin: AdminUser,
    clients: Clients,
    settings: AppSettings,
    limit: Limit = 50,
    cursor: Cursor = None,
    actor_id: Annotated[str | None, Query(max_length=64, description="Who acted")] = None,
    action: Annotated[str | None, Query(max_length=64, description="e.g. image.hide, user.ban")] = None,
    target: Annotated[str | None, Query(max_length=200, description="What was acted on, e.g. an image id")] = None,
    from_: Annotated[datetime | None, Query(alias="from", description="At or after (ISO 8601)")] = None,
    to: Annotated[datetime | None, Query(description="Before (ISO 8601)")] = None,
) -> AuditPage:
    request = admin_pb2.ListAuditRequest(
        limit=limit, cursor=cursor or "", actor_id=actor_id or "", action=action or "", target=target or ""
    )
    _period(request, from_, to)
    response = await clients.admin.ListAudit(
        request, timeout=settings.grpc_deadline_seconds, metadata=call_metadata(admin.token)
    )
    return AuditPage(items=[audit_out(entry) for entry in response.entries], next_cursor=response.next_cursor or None)
