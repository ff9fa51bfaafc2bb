"""gRPC transport for the admin service. It owns the audit log and its read models (usage,
model results, users' activity, the moderation queue) and reads the other services' data
through their admin methods, with the admin's own token."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime

import grpc
from google.protobuf.struct_pb2 import Struct

from admin_service.audit import AuditFilter, AuditLog
from admin_service.moderation import ModerationQueue
from admin_service.queues import QueueInspector
from admin_service.results import ModelResults
from admin_service.stats import model_message, period_of, queue_message, usage_message
from admin_service.timeline import Timeline
from admin_service.usage import UsageLedger
from facerestore.admin.v1 import admin_pb2, admin_pb2_grpc
from facerestore.auth.v1 import auth_pb2, auth_pb2_grpc
from facerestore.history.v1 import history_pb2, history_pb2_grpc
from facerestore_common.errors import InvalidArgument
from facerestore_common.grpc_client import call_metadata
from facerestore_common.grpc_server import Access
from facerestore_common.timeutil import ms_to_timestamp, now_ms
from facerestore_common.tokens import require_admin

ACCESS_POLICY = {
    "ListUsers": Access.ADMIN,
    "ListImages": Access.ADMIN,
    "DeleteImage": Access.ADMIN,
    "GetStats": Access.ADMIN,
    "SetUserBanned": Access.ADMIN,
    "SearchFaces": Access.ADMIN,
    "GetUser": Access.ADMIN,
    "ListAudit": Access.ADMIN,
    "ListModeration": Access.ADMIN,
    "SetImageHidden": Access.ADMIN,
    "DismissModeration": Access.ADMIN,
}
# Recorded for every search across all users; not a moderation action (GetStats leaves it out).
FACE_SEARCH_ACTION = "faces.search_all"
MAX_REASON_CHARS = 500


@dataclass(frozen=True)
class ReadModels:
    """What the admin service keeps from the platform's events (projector.AdminProjector)."""

    usage: UsageLedger
    results: ModelResults
    timeline: Timeline
    moderation: ModerationQueue
    queues: QueueInspector


def _page_size(requested: int, default: int = 50, largest: int = 200) -> int:
    return min(max(requested or default, 1), largest)


def _reason(reason: str, required: bool) -> str:
    reason = reason.strip()
    if required and not reason:
        raise InvalidArgument("a reason is required (it is kept in the audit log)", reason="validation-error")
    if len(reason) > MAX_REASON_CHARS:
        raise InvalidArgument(f"the reason is longer than {MAX_REASON_CHARS} characters", reason="validation-error")
    return reason


class AdminApi(admin_pb2_grpc.AdminServiceServicer):
    def __init__(
        self,
        auth: auth_pb2_grpc.AuthServiceStub,
        history: history_pb2_grpc.HistoryServiceStub,
        audit: AuditLog,
        timeout_seconds: float,
        models: ReadModels,
    ) -> None:
        self._auth = auth
        self._history = history
        self._audit = audit
        self._timeout = timeout_seconds
        self._models = models

    def _call_options(self) -> dict[str, object]:
        return {"metadata": call_metadata(require_admin().token), "timeout": self._timeout}

    async def ListUsers(
        self, request: admin_pb2.ListUsersRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.ListUsersResponse:
        response = await self._auth.ListUsers(
            auth_pb2.ListUsersRequest(limit=request.limit, cursor=request.cursor, phone=request.phone),
            **self._call_options(),
        )
        return admin_pb2.ListUsersResponse(users=response.users, next_cursor=response.next_cursor)

    async def ListImages(
        self, request: admin_pb2.ListImagesRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.ListImagesResponse:
        response = await self._history.AdminListImages(
            history_pb2.AdminListImagesRequest(limit=request.limit, cursor=request.cursor, user_id=request.user_id),
            **self._call_options(),
        )
        return admin_pb2.ListImagesResponse(images=response.images, next_cursor=response.next_cursor)

    async def DeleteImage(
        self, request: admin_pb2.DeleteImageRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.DeleteImageResponse:
        admin = require_admin()
        reason = _reason(request.reason, required=False)
        response = await self._history.AdminDeleteImage(
            history_pb2.AdminDeleteImageRequest(image_id=request.image_id, reason=reason), **self._call_options()
        )
        await self._audit.record(
            admin.user_id, "image.delete", request.image_id, owner_id=response.user_id, reason=reason
        )
        await self._models.moderation.decide(request.image_id, response.user_id, "deleted", reason, admin.user_id)
        return admin_pb2.DeleteImageResponse()

    async def GetStats(
        self, request: admin_pb2.GetStatsRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.GetStatsResponse:
        period = period_of(request, now_ms())
        users, images, usage, (restorers, analyzers), queues = await asyncio.gather(
            self._auth.CountUsers(auth_pb2.CountUsersRequest(), **self._call_options()),
            self._history.AdminStats(history_pb2.AdminStatsRequest(), **self._call_options()),
            self._models.usage.report(period.from_ms, period.to_ms, period.granularity),
            self._models.results.summaries(period.from_ms, period.to_ms),
            self._models.queues.inspect(),
        )
        stats = admin_pb2.GetStatsResponse(
            users=users.users,
            admins=users.admins,
            images_total=images.images_total,
            images_by_status=dict(images.images_by_status),
            faces_total=images.faces_total,
            mean_sharpness_gain=images.mean_sharpness_gain,
            mean_duration_ms=images.mean_duration_ms,
            moderation_actions=await self._audit.count(excluding=(FACE_SEARCH_ACTION,)),
            to=ms_to_timestamp(period.to_ms),
            granularity=period.granularity,
            usage_totals=usage_message(usage.totals),
            usage_series=[
                admin_pb2.UsageBucket(start=ms_to_timestamp(start), counts=usage_message(counts))
                for start, counts in usage.series
            ],
            restorers=[model_message(model) for model in restorers],
            analyzers=[model_message(model) for model in analyzers],
            queues=[queue_message(state) for state in queues],
        )
        getattr(stats, "from").CopyFrom(ms_to_timestamp(period.from_ms))
        stats.generated_at.FromDatetime(datetime.now(UTC))
        return stats

    async def SetUserBanned(
        self, request: admin_pb2.SetUserBannedRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.SetUserBannedResponse:
        admin = require_admin()
        reason = _reason(request.reason, required=False)
        response = await self._auth.SetUserBanned(
            auth_pb2.SetUserBannedRequest(user_id=request.user_id, banned=request.banned, reason=reason),
            **self._call_options(),
        )
        await self._audit.record(
            admin.user_id, "user.ban" if request.banned else "user.unban", request.user_id, reason=reason
        )
        return admin_pb2.SetUserBannedResponse(user=response.user)

    async def SearchFaces(
        self, request: admin_pb2.SearchFacesRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.SearchFacesResponse:
        admin = require_admin()
        search = history_pb2.SearchFacesRequest()
        search.CopyFrom(request.search)
        search.all_users = True
        # Recorded before anyone's faces are looked at: a search that cannot be audited does not run.
        await self._audit.record(admin.user_id, FACE_SEARCH_ACTION, search_target(search), **search_details(search))
        remaining = context.time_remaining()
        # The caller's own deadline (a search may wait for an embedding), else the usual one.
        timeout = remaining if remaining is not None and remaining < 3600 else self._timeout
        response = await self._history.SearchFaces(
            search, metadata=call_metadata(admin.token), timeout=max(0.001, timeout)
        )
        return admin_pb2.SearchFacesResponse(result=response)

    async def GetUser(
        self, request: admin_pb2.GetUserRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.GetUserResponse:
        response = await self._auth.GetUser(auth_pb2.GetUserRequest(user_id=request.user_id), **self._call_options())
        timeline = self._models.timeline
        entries, next_cursor = await timeline.page(request.user_id, _page_size(request.limit), request.cursor)
        return admin_pb2.GetUserResponse(
            user=response.user,
            activity_counts=await timeline.counts(request.user_id),
            activity=[
                admin_pb2.ActivityEntry(kind=entry.kind, at=ms_to_timestamp(entry.at_ms), details=entry.details)
                for entry in entries
            ],
            next_cursor=next_cursor,
        )

    async def ListAudit(
        self, request: admin_pb2.ListAuditRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.ListAuditResponse:
        where = AuditFilter(
            actor_id=request.actor_id,
            action=request.action,
            target=request.target,
            from_ms=getattr(request, "from").ToMilliseconds() if request.HasField("from") else None,
            to_ms=request.to.ToMilliseconds() if request.HasField("to") else None,
        )
        entries, next_cursor = await self._audit.page(where, _page_size(request.limit), request.cursor)
        messages = []
        for entry in entries:
            details = Struct()
            details.update(entry.details)
            messages.append(
                admin_pb2.AuditEntry(
                    id=entry.id,
                    actor_id=entry.actor_id,
                    action=entry.action,
                    target=entry.target,
                    details=details,
                    at=ms_to_timestamp(entry.at_ms),
                )
            )
        return admin_pb2.ListAuditResponse(entries=messages, next_cursor=next_cursor)

    async def ListModeration(
        self, request: admin_pb2.ListModerationRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.ListModerationResponse:
        status = request.status or "open"
        if status not in ("open", "resolved", "all"):
            raise InvalidArgument("status must be open, resolved or all", reason="validation-error")
        cases, next_cursor = await self._models.moderation.page(status, _page_size(request.limit), request.cursor)
        images: dict[str, history_pb2.Image] = {}
        if cases:
            found = await self._history.AdminGetImages(
                history_pb2.AdminGetImagesRequest(image_ids=[case.image_id for case in cases]),
                **self._call_options(),
            )
            images = {image.id: image for image in found.images}
        return admin_pb2.ListModerationResponse(
            cases=[
                admin_pb2.ModerationCase(
                    image_id=case.image_id,
                    user_id=case.user_id,
                    status=case.status,
                    reports=case.reports,
                    report_reasons=case.report_reasons,
                    low_ratings=case.low_ratings,
                    lowest_rating=case.lowest_rating,
                    hidden=case.hidden,
                    opened_at=ms_to_timestamp(case.opened_at_ms),
                    updated_at=ms_to_timestamp(case.updated_at_ms),
                    resolution=case.resolution,
                    resolution_reason=case.resolution_reason,
                    resolved_by=case.resolved_by,
                    image=images.get(case.image_id),
                )
                for case in cases
            ],
            next_cursor=next_cursor,
        )

    async def SetImageHidden(
        self, request: admin_pb2.SetImageHiddenRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.SetImageHiddenResponse:
        admin = require_admin()
        reason = _reason(request.reason, required=True)
        response = await self._history.AdminSetHidden(
            history_pb2.AdminSetHiddenRequest(image_id=request.image_id, hidden=request.hidden, reason=reason),
            **self._call_options(),
        )
        action = "image.hide" if request.hidden else "image.show"
        await self._audit.record(admin.user_id, action, request.image_id, owner_id=response.user_id, reason=reason)
        resolution = "hidden" if request.hidden else "shown"
        await self._models.moderation.decide(request.image_id, response.user_id, resolution, reason, admin.user_id)
        return admin_pb2.SetImageHiddenResponse()

    async def DismissModeration(
        self, request: admin_pb2.DismissModerationRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.DismissModerationResponse:
        """Nothing is wrong with the image: the case closes, and a hidden image is shown again."""
        admin = require_admin()
        reason = _reason(request.reason, required=True)
        response = await self._history.AdminSetHidden(
            history_pb2.AdminSetHiddenRequest(image_id=request.image_id, hidden=False, reason=reason),
            **self._call_options(),
        )
        await self._audit.record(
            admin.user_id, "moderation.dismiss", request.image_id, owner_id=response.user_id, reason=reason
        )
        await self._models.moderation.decide(request.image_id, response.user_id, "dismissed", reason, admin.user_id)
        return admin_pb2.DismissModerationResponse()


def search_target(search: history_pb2.SearchFacesRequest) -> str:
    """What was searched with: a stored face, or an uploaded photo (whose bytes are never kept)."""
    if search.WhichOneof("query") == "face":
        return f"image:{search.face.image_id}#{search.face.face_index}"
    return "photo"


def search_details(search: history_pb2.SearchFacesRequest) -> dict[str, object]:
    filters = search.filters
    details: dict[str, object] = {
        "top_k": search.top_k,
        "min_score": search.min_score,
        "tags": list(filters.tags),
        "location": filters.location,
        "created_from": filters.created_from.ToJsonString() if filters.HasField("created_from") else "",
        "created_to": filters.created_to.ToJsonString() if filters.HasField("created_to") else "",
    }
    if search.WhichOneof("query") == "image":
        details["photo_bytes"] = len(search.image)
        details["query_face"] = search.query_face if search.HasField("query_face") else None
    return details
