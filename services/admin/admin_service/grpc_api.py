"""gRPC transport for the admin service. It owns the audit log and reads the other
services' data through their admin methods, with the admin's own token."""

from __future__ import annotations

from datetime import UTC, datetime

import grpc

from admin_service.audit import AuditLog
from facerestore.admin.v1 import admin_pb2, admin_pb2_grpc
from facerestore.auth.v1 import auth_pb2, auth_pb2_grpc
from facerestore.history.v1 import history_pb2, history_pb2_grpc
from facerestore_common.grpc_client import call_metadata
from facerestore_common.grpc_server import Access
from facerestore_common.tokens import require_admin

ACCESS_POLICY = {
    "ListUsers": Access.ADMIN,
    "ListImages": Access.ADMIN,
    "DeleteImage": Access.ADMIN,
    "GetStats": Access.ADMIN,
    "SetUserBanned": Access.ADMIN,
}


class AdminApi(admin_pb2_grpc.AdminServiceServicer):
    def __init__(
        self,
        auth: auth_pb2_grpc.AuthServiceStub,
        history: history_pb2_grpc.HistoryServiceStub,
        audit: AuditLog,
        timeout_seconds: float,
    ) -> None:
        self._auth = auth
        self._history = history
        self._audit = audit
        self._timeout = timeout_seconds

    def _call_options(self) -> dict[str, object]:
        return {"metadata": call_metadata(require_admin().token), "timeout": self._timeout}

    async def ListUsers(
        self, request: admin_pb2.ListUsersRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.ListUsersResponse:
        response = await self._auth.ListUsers(
            auth_pb2.ListUsersRequest(limit=request.limit, cursor=request.cursor), **self._call_options()
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
        response = await self._history.AdminDeleteImage(
            history_pb2.AdminDeleteImageRequest(image_id=request.image_id, reason=request.reason),
            **self._call_options(),
        )
        await self._audit.record(
            admin.user_id, "image.delete", request.image_id, owner_id=response.user_id, reason=request.reason
        )
        return admin_pb2.DeleteImageResponse()

    async def GetStats(
        self, request: admin_pb2.GetStatsRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.GetStatsResponse:
        users = await self._auth.CountUsers(auth_pb2.CountUsersRequest(), **self._call_options())
        images = await self._history.AdminStats(history_pb2.AdminStatsRequest(), **self._call_options())
        stats = admin_pb2.GetStatsResponse(
            users=users.users,
            admins=users.admins,
            images_total=images.images_total,
            images_by_status=dict(images.images_by_status),
            faces_total=images.faces_total,
            mean_sharpness_gain=images.mean_sharpness_gain,
            mean_duration_ms=images.mean_duration_ms,
            moderation_actions=await self._audit.count(),
        )
        stats.generated_at.FromDatetime(datetime.now(UTC))
        return stats

    async def SetUserBanned(
        self, request: admin_pb2.SetUserBannedRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.SetUserBannedResponse:
        admin = require_admin()
        response = await self._auth.SetUserBanned(
            auth_pb2.SetUserBannedRequest(user_id=request.user_id, banned=request.banned, reason=request.reason),
            **self._call_options(),
        )
        await self._audit.record(
            admin.user_id, "user.ban" if request.banned else "user.unban", request.user_id, reason=request.reason
        )
        return admin_pb2.SetUserBannedResponse(user=response.user)
