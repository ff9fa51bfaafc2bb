"""gRPC transport of the user's library (library.py) and exports (exports.py): a part of the
HistoryService servicer (grpc_api.HistoryApi inherits it)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from facerestore.history.v1 import history_pb2, history_pb2_grpc
from facerestore_common.errors import DomainError, InvalidArgument, Unavailable
from facerestore_common.grpc_server import Access
from facerestore_common.logging import get_logger
from facerestore_common.timeutil import ms_to_timestamp
from facerestore_common.tokens import require_principal
from history_service.exports import Export, Exports
from history_service.history import History
from history_service.items import Item
from history_service.library import Library, ListFilters, MetadataPatch, feedback_message
from history_service.preference import prefer
from history_service.versions import is_restoration_id

log = get_logger(__name__)

LIBRARY_ACCESS = {
    "UpdateImage": Access.USER,
    "GiveFeedback": Access.USER,
    "DeleteAllImages": Access.USER,
    "CreateExport": Access.USER,
    "GetExport": Access.USER,
    "ListExports": Access.USER,
    # Authorised by the download token in the request.
    "DownloadExport": Access.PUBLIC,
}


def _limit(requested: int) -> int:
    return min(max(requested or 20, 1), 100)


def list_filters(request: history_pb2.ListImagesRequest) -> ListFilters:
    return ListFilters.parse(
        statuses=list(request.statuses),
        tags=list(request.tags),
        created_from_ms=request.created_from.ToMilliseconds() if request.HasField("created_from") else None,
        created_to_ms=request.created_to.ToMilliseconds() if request.HasField("created_to") else None,
        location=request.location,
        query=request.query,
    )


def feedback_of(item: Item) -> history_pb2.Feedback | None:
    return history_pb2.Feedback(**feedback_message(item.feedback)) if item.feedback else None


class LibraryApi(history_pb2_grpc.HistoryServiceServicer):
    _history: History
    _library: Library | None
    _exports: Exports | None

    def _write_image(self, target: history_pb2.Image, item: Item, *, for_admin: bool = False) -> None:
        """An item as the API shows it, written into `target`."""
        raise NotImplementedError

    def _message(self, item: Item, *, for_admin: bool = False) -> history_pb2.Image:
        """An item as the API shows it, as a message of its own."""
        message = history_pb2.Image()
        self._write_image(message, item, for_admin=for_admin)
        return message

    def _list_response(self, items: list[Item], next_cursor: str) -> history_pb2.ListImagesResponse:
        response = history_pb2.ListImagesResponse(next_cursor=next_cursor)
        for item in items:
            self._write_image(response.images.add(), item)
        return response

    def _require_library(self) -> Library:
        if self._library is None:
            raise Unavailable("the library is not configured", reason="library-unavailable")
        return self._library

    def _require_exports(self) -> Exports:
        if self._exports is None:
            raise Unavailable("exports are not configured", reason="exports-unavailable")
        return self._exports

    async def list_own(self, request: history_pb2.ListImagesRequest) -> history_pb2.ListImagesResponse:
        user_id = require_principal().user_id
        filters = list_filters(request)
        if self._library is None and filters == ListFilters() and not request.include_counts:
            # A history without the library's indexes (tests of other parts): the plain list.
            items, next_cursor = await self._history.items.list(_limit(request.limit), request.cursor, user_id)
            return self._list_response(items, next_cursor)
        library = self._require_library()
        items, next_cursor = await library.list(user_id, filters, _limit(request.limit), request.cursor)
        response = self._list_response(items, next_cursor)
        if request.include_counts:
            response.counts.update(await library.counts(user_id, filters))
        return response

    async def get_own(self, request: history_pb2.GetImageRequest) -> history_pb2.GetImageResponse:
        item = await self._history.get_own(require_principal().user_id, request.image_id)
        response = history_pb2.GetImageResponse()
        self._write_image(response.image, item)
        if request.include_restored:
            response.restored_content = await self._require_library().restored_content(item)
        return response

    async def UpdateImage(
        self, request: history_pb2.UpdateImageRequest, context: grpc.aio.ServicerContext
    ) -> history_pb2.UpdateImageResponse:
        patch = MetadataPatch.parse(
            list(request.tags.values) if request.HasField("tags") else None,
            request.note if request.HasField("note") else None,
            request.location if request.HasField("location") else None,
        )
        user_id = require_principal().user_id
        library = self._require_library()
        if request.HasField("preferred_restoration"):
            if not is_restoration_id(request.preferred_restoration):
                raise InvalidArgument("preferred_restoration is a restoration id such as r2", reason="validation-error")
            await prefer(self._history, user_id, request.image_id, request.preferred_restoration)
        item = await library.update(user_id, request.image_id, patch)
        return history_pb2.UpdateImageResponse(image=self._message(item))

    async def GiveFeedback(
        self, request: history_pb2.GiveFeedbackRequest, context: grpc.aio.ServicerContext
    ) -> history_pb2.GiveFeedbackResponse:
        feedback = await self._require_library().give_feedback(
            require_principal().user_id, request.image_id, request.rating, request.comment
        )
        return history_pb2.GiveFeedbackResponse(feedback=history_pb2.Feedback(**feedback_message(feedback)))

    async def DeleteAllImages(
        self, request: history_pb2.DeleteAllImagesRequest, context: grpc.aio.ServicerContext
    ) -> history_pb2.DeleteAllImagesResponse:
        deleted = await self._require_library().delete_all(require_principal().user_id)
        return history_pb2.DeleteAllImagesResponse(deleted=deleted)

    def _export_message(self, export: Export) -> history_pb2.Export:
        message = history_pb2.Export(
            id=export.id,
            status=export.status,
            created_at=ms_to_timestamp(export.created_at_ms),
            updated_at=ms_to_timestamp(export.updated_at_ms or export.created_at_ms),
            items_done=export.items_done,
            items_total=export.items_total,
            size_bytes=export.size_bytes,
            error=export.error,
        )
        if export.status == "done":
            token, expires_at_ms = self._require_exports().links.issue(export)
            message.download_token = token
            message.download_expires_at.CopyFrom(ms_to_timestamp(expires_at_ms))
            message.expires_at.CopyFrom(ms_to_timestamp(export.expires_at_ms))
        return message

    async def CreateExport(
        self, request: history_pb2.CreateExportRequest, context: grpc.aio.ServicerContext
    ) -> history_pb2.CreateExportResponse:
        export = await self._require_exports().create(require_principal().user_id)
        return history_pb2.CreateExportResponse(export=self._export_message(export))

    async def GetExport(
        self, request: history_pb2.GetExportRequest, context: grpc.aio.ServicerContext
    ) -> history_pb2.GetExportResponse:
        export = await self._require_exports().get_own(require_principal().user_id, request.export_id)
        return history_pb2.GetExportResponse(export=self._export_message(export))

    async def ListExports(
        self, request: history_pb2.ListExportsRequest, context: grpc.aio.ServicerContext
    ) -> history_pb2.ListExportsResponse:
        exports = await self._require_exports().jobs.of_user(require_principal().user_id)
        return history_pb2.ListExportsResponse(exports=[self._export_message(export) for export in exports])

    async def DownloadExport(
        self, request: history_pb2.DownloadExportRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[history_pb2.DownloadExportResponse]:
        # Streaming methods pass outside the unary interceptors (grpc_server), so the domain error
        # of a bad link is turned into its status here.
        try:
            export, chunks = await self._require_exports().open_download(request.token)
        except DomainError as error:
            context.set_trailing_metadata(error.trailing_metadata())
            await context.abort(error.status, error.detail)
        log.info("export_download", export_id=export.id, bytes=export.size_bytes)
        first = True
        async for chunk in chunks:
            if first:
                yield history_pb2.DownloadExportResponse(
                    data=chunk, total_size=export.size_bytes, filename=export.filename
                )
                first = False
            else:
                yield history_pb2.DownloadExportResponse(data=chunk)
