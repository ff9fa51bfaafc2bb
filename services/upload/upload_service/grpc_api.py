"""gRPC transport for the upload service."""

from __future__ import annotations

import grpc

from facerestore.upload.v1 import upload_pb2, upload_pb2_grpc
from facerestore_common.grpc_server import Access
from facerestore_common.metadata import parse_metadata
from facerestore_common.timeutil import ms_to_timestamp
from facerestore_common.tokens import require_principal
from upload_service.uploads import Uploads

ACCESS_POLICY = {"CreateUpload": Access.USER}


class UploadApi(upload_pb2_grpc.UploadServiceServicer):
    def __init__(self, uploads: Uploads) -> None:
        self._uploads = uploads

    async def CreateUpload(
        self, request: upload_pb2.CreateUploadRequest, context: grpc.aio.ServicerContext
    ) -> upload_pb2.CreateUploadResponse:
        principal = require_principal()
        metadata = parse_metadata(request.tags, request.note, request.location)
        job, replayed = await self._uploads.accept(
            principal.user_id, request.content, metadata, idempotency_key=request.idempotency_key
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
        )
