"""gRPC transport for the upload service."""

from __future__ import annotations

import grpc

from facerestore.upload.v1 import upload_pb2, upload_pb2_grpc
from facerestore_common import restoration_options
from facerestore_common.errors import InvalidArgument, Unavailable
from facerestore_common.grpc_server import Access
from facerestore_common.metadata import parse_metadata
from facerestore_common.timeutil import ms_to_timestamp
from facerestore_common.tokens import require_principal
from upload_service.restorations import Restorations
from upload_service.uploads import FIRST_RESTORATION, Uploads

ACCESS_POLICY = {"CreateUpload": Access.USER, "CreateRestoration": Access.USER}


def _required_options(request: upload_pb2.CreateUploadRequest | upload_pb2.CreateRestorationRequest) -> None:
    # The gateway resolves the model before it calls; a caller that sends none is a bug.
    if not request.HasField("options") or not request.options.model:
        raise InvalidArgument("options.model is required", reason="validation-error")


class UploadApi(upload_pb2_grpc.UploadServiceServicer):
    def __init__(self, uploads: Uploads, restorations: Restorations | None = None) -> None:
        self._uploads = uploads
        self._restorations = restorations

    async def CreateUpload(
        self, request: upload_pb2.CreateUploadRequest, context: grpc.aio.ServicerContext
    ) -> upload_pb2.CreateUploadResponse:
        principal = require_principal()
        _required_options(request)
        metadata = parse_metadata(request.tags, request.note, request.location)
        job, replayed = await self._uploads.accept(
            principal.user_id,
            request.content,
            metadata,
            request.idempotency_key,
            options=request.options,
            requested_model=request.requested_model,
        )
        return upload_pb2.CreateUploadResponse(
            image_id=job.image_id,
            status="queued",
            created_at=ms_to_timestamp(job.created_at_ms),
            content_type=job.content_type,
            width=job.width,
            height=job.height,
            replayed=replayed,
            tags=job.tags,
            note=job.note,
            location=job.location,
            options=restoration_options.from_document(job.options) if job.options else None,
            restoration_id=FIRST_RESTORATION,
        )

    async def CreateRestoration(
        self, request: upload_pb2.CreateRestorationRequest, context: grpc.aio.ServicerContext
    ) -> upload_pb2.CreateRestorationResponse:
        principal = require_principal()
        _required_options(request)
        if self._restorations is None:
            raise Unavailable("reprocessing is not configured", reason="service-unavailable")
        restoration, replayed = await self._restorations.request(
            principal.user_id,
            request.image_id,
            request.options,
            request.idempotency_key,
            requested_model=request.requested_model,
        )
        return upload_pb2.CreateRestorationResponse(
            image_id=restoration.image_id,
            restoration_id=restoration.restoration_id,
            options=restoration_options.from_document(restoration.options),
            status="queued",
            created_at=ms_to_timestamp(restoration.created_at_ms),
            replayed=replayed,
        )
