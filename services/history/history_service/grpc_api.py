"""gRPC transport for the history service."""

from __future__ import annotations

import grpc

from facerestore.history.v1 import history_pb2, history_pb2_grpc
from facerestore_common.grpc_server import Access
from facerestore_common.timeutil import ms_to_timestamp
from facerestore_common.tokens import require_principal
from history_service.history import History
from history_service.items import Item

ACCESS_POLICY = {
    "ListImages": Access.USER,
    "GetImage": Access.USER,
    "DeleteImage": Access.USER,
    # Authorised by the download token in the request.
    "GetContent": Access.PUBLIC,
    "AdminListImages": Access.ADMIN,
    "AdminDeleteImage": Access.ADMIN,
    "AdminStats": Access.ADMIN,
}


def _limit(requested: int) -> int:
    return min(max(requested or 20, 1), 100)


class HistoryApi(history_pb2_grpc.HistoryServiceServicer):
    def __init__(self, history: History) -> None:
        self._history = history

    def _message(self, item: Item) -> history_pb2.Image:
        tokens = self._history.downloads
        quality = item.quality
        return history_pb2.Image(
            id=item.id,
            user_id=item.user_id,
            status=item.status,
            created_at=ms_to_timestamp(item.created_at_ms),
            updated_at=ms_to_timestamp(item.updated_at_ms or item.created_at_ms),
            faces=item.faces,
            quality=history_pb2.Quality(
                sharpness_before=quality.get("sharpness_before", 0.0),
                sharpness_after=quality.get("sharpness_after", 0.0),
                sharpness_gain=quality.get("sharpness_gain", 0.0),
                backend=quality.get("backend", ""),
                duration_ms=quality.get("duration_ms", 0.0),
                restorer_model=quality.get("restorer_model", ""),
                analyzer_model=quality.get("analyzer_model", ""),
                identity_min=quality.get("identity_min", 0.0),
                identity_mean=quality.get("identity_mean", 0.0),
                stage_ms=quality.get("stage_ms", {}),
                warnings=quality.get("warnings", []),
                face_detection_scores=quality.get("face_detection_scores", []),
            )
            if quality
            else None,
            tags=item.tags,
            note=item.note,
            location=item.location,
            error=item.error,
            original_token=tokens.issue(item.id, "original") if item.original_key else "",
            thumbnail_token=tokens.issue(item.id, "thumbnail") if item.original_thumbnail_key else "",
            restored_token=tokens.issue(item.id, "restored") if item.restored_key else "",
            width=item.width,
            height=item.height,
        )

    async def ListImages(
        self, request: history_pb2.ListImagesRequest, context: grpc.aio.ServicerContext
    ) -> history_pb2.ListImagesResponse:
        items, next_cursor = await self._history.items.list(
            _limit(request.limit), request.cursor, require_principal().user_id
        )
        return history_pb2.ListImagesResponse(images=[self._message(i) for i in items], next_cursor=next_cursor)

    async def GetImage(
        self, request: history_pb2.GetImageRequest, context: grpc.aio.ServicerContext
    ) -> history_pb2.GetImageResponse:
        item = await self._history.get_own(require_principal().user_id, request.image_id)
        return history_pb2.GetImageResponse(image=self._message(item))

    async def DeleteImage(
        self, request: history_pb2.DeleteImageRequest, context: grpc.aio.ServicerContext
    ) -> history_pb2.DeleteImageResponse:
        await self._history.delete(request.image_id, owner_id=require_principal().user_id, deleted_by="user")
        return history_pb2.DeleteImageResponse()

    async def GetContent(
        self, request: history_pb2.GetContentRequest, context: grpc.aio.ServicerContext
    ) -> history_pb2.GetContentResponse:
        content, content_type = await self._history.content(request.token)
        return history_pb2.GetContentResponse(content=content, content_type=content_type)

    async def AdminListImages(
        self, request: history_pb2.AdminListImagesRequest, context: grpc.aio.ServicerContext
    ) -> history_pb2.AdminListImagesResponse:
        items, next_cursor = await self._history.items.list(
            _limit(request.limit), request.cursor, request.user_id or None
        )
        return history_pb2.AdminListImagesResponse(images=[self._message(i) for i in items], next_cursor=next_cursor)

    async def AdminDeleteImage(
        self, request: history_pb2.AdminDeleteImageRequest, context: grpc.aio.ServicerContext
    ) -> history_pb2.AdminDeleteImageResponse:
        item = await self._history.delete(request.image_id, owner_id=None, deleted_by="admin")
        return history_pb2.AdminDeleteImageResponse(user_id=item.user_id)

    async def AdminStats(
        self, request: history_pb2.AdminStatsRequest, context: grpc.aio.ServicerContext
    ) -> history_pb2.AdminStatsResponse:
        return history_pb2.AdminStatsResponse(**await self._history.items.stats())
