"""gRPC transport for the history service."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import grpc

from facerestore.history.v1 import history_pb2, history_pb2_grpc
from facerestore_common import restoration_options
from facerestore_common.activity import ActivityRecorder
from facerestore_common.errors import InvalidArgument, Unavailable
from facerestore_common.grpc_server import Access
from facerestore_common.logging import get_logger
from facerestore_common.timeutil import ms_to_timestamp
from facerestore_common.tokens import require_principal
from history_service.downloads import DownloadTokens
from history_service.exports import Exports
from history_service.face_index import SearchFilters
from history_service.history import History
from history_service.items import Item
from history_service.library import Library
from history_service.library_api import LIBRARY_ACCESS, LibraryApi, feedback_of
from history_service.moderation import Moderation
from history_service.search import FaceSearch, SearchQuery, SearchResult
from history_service.versions import Version, detected_faces

log = get_logger(__name__)

ACCESS_POLICY = {
    "ListImages": Access.USER,
    "GetImage": Access.USER,
    "DeleteImage": Access.USER,
    # Authorised by the download token in the request.
    "GetContent": Access.PUBLIC,
    "AdminListImages": Access.ADMIN,
    "AdminDeleteImage": Access.ADMIN,
    "AdminStats": Access.ADMIN,
    # Any signed-in user over their own faces; all_users is checked against the role inside.
    "SearchFaces": Access.USER,
    "ReportImage": Access.USER,
    "AdminSetHidden": Access.ADMIN,
    "AdminGetImages": Access.ADMIN,
    **LIBRARY_ACCESS,
}


# Images are written field by field into the response's own sub-messages: a part built on its
# own and passed to its parent's constructor (or a repeated field) is copied again, and those
# copies were a large share of what a page of images cost this service.


def write_quality(target: history_pb2.Quality, quality: Mapping[str, Any]) -> None:
    """A stored quality document, written into `target` (set even when every value is a default;
    a value stored as None reads as the default, as the message's constructor reads it)."""
    target.SetInParent()
    target.sharpness_before = quality.get("sharpness_before") or 0.0
    target.sharpness_after = quality.get("sharpness_after") or 0.0
    target.sharpness_gain = quality.get("sharpness_gain") or 0.0
    target.backend = quality.get("backend") or ""
    target.duration_ms = quality.get("duration_ms") or 0.0
    target.restorer_model = quality.get("restorer_model") or ""
    target.analyzer_model = quality.get("analyzer_model") or ""
    target.identity_min = quality.get("identity_min") or 0.0
    target.identity_mean = quality.get("identity_mean") or 0.0
    stage_ms = quality.get("stage_ms")
    if stage_ms:
        target.stage_ms.update(stage_ms)
    target.warnings.extend(quality.get("warnings") or ())
    target.face_detection_scores.extend(quality.get("face_detection_scores") or ())


def write_restoration(
    target: history_pb2.Restoration, image_id: str, version: Version, tokens: DownloadTokens, review: bool
) -> None:
    """A version as the API shows it, written into `target`."""
    target.id = version.id
    target.options.CopyFrom(restoration_options.from_document(version.options))
    target.status = version.status
    target.created_at.FromMilliseconds(version.created_at_ms)
    target.updated_at.FromMilliseconds(version.updated_at_ms or version.created_at_ms)
    if version.quality:
        write_quality(target.quality, version.quality)
    if version.restored_thumbnail_key:
        target.thumbnail_token = tokens.issue(image_id, "thumbnail", review=review, restoration=version.id)
    if version.restored_key:
        target.restored_token = tokens.issue(image_id, "restored", review=review, restoration=version.id)
    target.error = version.error


def _limit(requested: int) -> int:
    return min(max(requested or 20, 1), 100)


def _search_query(request: history_pb2.SearchFacesRequest) -> SearchQuery:
    filters = request.filters
    return SearchQuery(
        image=request.image if request.WhichOneof("query") == "image" else b"",
        face=(request.face.image_id, request.face.face_index) if request.WhichOneof("query") == "face" else None,
        query_face=request.query_face if request.HasField("query_face") else None,
        top_k=request.top_k,
        min_score=request.min_score,
        filters=SearchFilters(
            created_from_ms=filters.created_from.ToMilliseconds() if filters.HasField("created_from") else None,
            created_to_ms=filters.created_to.ToMilliseconds() if filters.HasField("created_to") else None,
            location=filters.location or None,
            tags=tuple(filters.tags),
        ),
        all_users=request.all_users,
    )


class HistoryApi(LibraryApi, history_pb2_grpc.HistoryServiceServicer):
    def __init__(
        self,
        history: History,
        search: FaceSearch | None = None,
        moderation: Moderation | None = None,
        activity: ActivityRecorder | None = None,
        library: Library | None = None,
        exports: Exports | None = None,
    ) -> None:
        self._history = history
        self._library = library
        self._exports = exports
        self._search = search
        self._moderation = moderation
        self._activity = activity

    def _write_image(self, target: history_pb2.Image, item: Item, *, for_admin: bool = False) -> None:
        """An item as the API shows it, written into `target` (a response's own field, so that it
        is not copied again); while it is under review only admins get its pictures."""
        self._write_item(target, item, review=item.under_review and for_admin)
        target.under_review = item.under_review
        if item.under_review and not for_admin:
            target.original_token = target.thumbnail_token = target.restored_token = ""
            for restoration in target.restorations:
                restoration.thumbnail_token = restoration.restored_token = ""

    def _write_item(self, target: history_pb2.Image, item: Item, review: bool) -> None:
        tokens = self._history.downloads
        versions = item.versions
        preferred = next((version for version in versions if version.id == item.preferred_restoration), None)
        target.id = item.id
        target.user_id = item.user_id
        target.status = item.status
        target.created_at.FromMilliseconds(item.created_at_ms)
        target.updated_at.FromMilliseconds(item.updated_at_ms or item.created_at_ms)
        target.faces = item.faces
        if item.quality:
            write_quality(target.quality, item.quality)
        target.tags.extend(item.tags)
        target.note = item.note
        target.location = item.location
        target.error = item.error
        if item.original_key:
            target.original_token = tokens.issue(item.id, "original", review=review)
        if item.original_thumbnail_key:
            target.thumbnail_token = tokens.issue(item.id, "thumbnail", review=review)
        if item.restored_key:
            target.restored_token = tokens.issue(item.id, "restored", review=review)
        target.width = item.width
        target.height = item.height
        feedback = feedback_of(item)
        if feedback is not None:
            target.feedback.CopyFrom(feedback)
        for face in detected_faces(item.detected_faces, preferred):
            target.detected_faces.add(**face)
        for version in versions:
            write_restoration(target.restorations.add(), item.id, version, tokens, review)
        target.preferred_restoration = item.preferred_restoration

    async def ListImages(
        self, request: history_pb2.ListImagesRequest, context: grpc.aio.ServicerContext
    ) -> history_pb2.ListImagesResponse:
        return await self.list_own(request)

    async def GetImage(
        self, request: history_pb2.GetImageRequest, context: grpc.aio.ServicerContext
    ) -> history_pb2.GetImageResponse:
        return await self.get_own(request)

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
        response = history_pb2.AdminListImagesResponse(next_cursor=next_cursor)
        for item in items:
            self._write_image(response.images.add(), item, for_admin=True)
        return response

    async def AdminDeleteImage(
        self, request: history_pb2.AdminDeleteImageRequest, context: grpc.aio.ServicerContext
    ) -> history_pb2.AdminDeleteImageResponse:
        item = await self._history.delete(request.image_id, owner_id=None, deleted_by="admin")
        return history_pb2.AdminDeleteImageResponse(user_id=item.user_id)

    async def AdminStats(
        self, request: history_pb2.AdminStatsRequest, context: grpc.aio.ServicerContext
    ) -> history_pb2.AdminStatsResponse:
        return history_pb2.AdminStatsResponse(**await self._history.items.stats())

    async def SearchFaces(
        self, request: history_pb2.SearchFacesRequest, context: grpc.aio.ServicerContext
    ) -> history_pb2.SearchFacesResponse:
        if self._search is None:
            raise Unavailable("similar-face search is not configured", reason="search-unavailable")
        principal = require_principal()
        result = await self._search.search(principal, _search_query(request))
        await self._record_search(principal.user_id, request)
        return self._search_response(result)

    async def _record_search(self, user_id: str, request: history_pb2.SearchFacesRequest) -> None:
        """A search made, for the admins' statistics; its failure to be recorded is only logged."""
        if self._activity is None:
            return
        try:
            await self._activity.record(
                "search.made",
                user_id,
                scope="all" if request.all_users else "own",
                query=request.WhichOneof("query") or "none",
            )
        except Exception:
            log.error("activity_not_recorded", kind="search.made", exc_info=True)

    async def ReportImage(
        self, request: history_pb2.ReportImageRequest, context: grpc.aio.ServicerContext
    ) -> history_pb2.ReportImageResponse:
        await self._require_moderation().report(
            require_principal().user_id, request.image_id, request.reason, request.note
        )
        return history_pb2.ReportImageResponse()

    async def AdminSetHidden(
        self, request: history_pb2.AdminSetHiddenRequest, context: grpc.aio.ServicerContext
    ) -> history_pb2.AdminSetHiddenResponse:
        item = await self._require_moderation().set_hidden(request.image_id, request.hidden, request.reason)
        return history_pb2.AdminSetHiddenResponse(user_id=item.user_id)

    async def AdminGetImages(
        self, request: history_pb2.AdminGetImagesRequest, context: grpc.aio.ServicerContext
    ) -> history_pb2.AdminGetImagesResponse:
        if len(request.image_ids) > 200:
            raise InvalidArgument("at most 200 images at once", reason="validation-error")
        found = await self._history.items.get_many(request.image_ids)
        response = history_pb2.AdminGetImagesResponse()
        for image_id in request.image_ids:
            if image_id in found:
                self._write_image(response.images.add(), found[image_id], for_admin=True)
        return response

    def _require_moderation(self) -> Moderation:
        if self._moderation is None:
            raise Unavailable("moderation is not configured", reason="service-unavailable")
        return self._moderation

    def _search_response(self, result: SearchResult) -> history_pb2.SearchFacesResponse:
        tokens = self._history.downloads
        return history_pb2.SearchFacesResponse(
            model=result.model,
            query_faces=[
                history_pb2.QueryFace(
                    index=face.index, box=list(face.box), detection_score=face.detection_score, used=face.used
                )
                for face in result.query_faces
            ],
            matches=[
                history_pb2.FaceMatch(
                    image_id=match.item.id,
                    face_index=match.face_index,
                    score=match.score,
                    box=list(match.box),
                    created_at=ms_to_timestamp(match.item.created_at_ms),
                    tags=match.item.tags,
                    location=match.item.location,
                    user_id=match.item.user_id,
                    thumbnail_token=tokens.issue(match.item.id, "thumbnail")
                    if match.item.original_thumbnail_key
                    else "",
                    restored_token=tokens.issue(match.item.id, "restored") if match.item.restored_key else "",
                )
                for match in result.matches
            ],
        )
