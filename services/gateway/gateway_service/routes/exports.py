"""Exports of your whole history as a ZIP: ask for one, follow its progress, download it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Literal
from urllib.parse import quote

import grpc
from fastapi import Request, Response, status
from fastapi.responses import StreamingResponse
from google.protobuf.timestamp_pb2 import Timestamp
from pydantic import BaseModel, Field

from facerestore.history.v1 import history_pb2
from facerestore_common.grpc_client import call_metadata
from gateway_service.dependencies import AppSettings, Clients, CurrentUser, ExportQuota
from gateway_service.openapi_document import api_router
from gateway_service.problems import Problem
from gateway_service.responses import NOT_FOUND, UNAUTHORIZED, problem, rate_limited

router = api_router("exports")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _datetime(stamp: Timestamp) -> datetime:
    return _EPOCH + timedelta(seconds=stamp.seconds, microseconds=stamp.nanos // 1000)


class ExportProgress(BaseModel):
    items_done: int
    items_total: int = Field(description="Images in the history when the export started (0 until it starts)")


class ExportOut(BaseModel):
    id: str
    status: Literal["queued", "running", "done", "failed", "expired"] = Field(
        description="queued → running → done (or failed); done becomes expired when the archive is deleted"
    )
    created_at: datetime
    updated_at: datetime
    progress: ExportProgress
    size_bytes: int | None = Field(default=None, description="The archive's size, once done")
    download_url: str | None = Field(
        default=None,
        description="Once done: where to download the ZIP, without a token (the link is the permission); "
        "it stops working at download_expires_at; ask for the export again for a fresh link",
    )
    download_expires_at: datetime | None = None
    expires_at: datetime | None = Field(default=None, description="When the archive will be deleted")
    error: str | None = Field(default=None, description="Why it failed (machine-readable)")


class ExportList(BaseModel):
    items: list[ExportOut] = Field(description="Your recent exports, newest first")


def export_out(export: history_pb2.Export, request: Request) -> ExportOut:
    base: str = request.app.state.settings.public_base_url
    done = export.status == "done"
    return ExportOut(
        id=export.id,
        status=export.status,  # type: ignore[arg-type]
        created_at=_datetime(export.created_at),
        updated_at=_datetime(export.updated_at),
        progress=ExportProgress(items_done=export.items_done, items_total=export.items_total),
        size_bytes=export.size_bytes if done else None,
        download_url=f"{base}/v1/exports/download/{export.download_token}" if export.download_token else None,
        download_expires_at=_datetime(export.download_expires_at) if export.HasField("download_expires_at") else None,
        expires_at=_datetime(export.expires_at) if export.HasField("expires_at") else None,
        error=export.error or None,
    )


@router.post(
    "/v1/exports",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=ExportOut,
    summary="Export all your images (originals, results and their metadata) as a ZIP, made in the background",
    responses={
        401: UNAUTHORIZED,
        429: rate_limited("exports-per-user: more exports than the daily limit"),
    },
)
async def create_export(
    request: Request,
    response: Response,
    user: CurrentUser,
    quota: ExportQuota,
    clients: Clients,
    settings: AppSettings,
) -> ExportOut:
    answer = await clients.history.CreateExport(
        history_pb2.CreateExportRequest(), timeout=settings.grpc_deadline_seconds, metadata=call_metadata(user.token)
    )
    response.headers["Location"] = f"{settings.public_base_url}/v1/exports/{answer.export.id}"
    return export_out(answer.export, request)


@router.get("/v1/exports", response_model=ExportList, summary="Your recent exports", responses={401: UNAUTHORIZED})
async def list_exports(request: Request, user: CurrentUser, clients: Clients, settings: AppSettings) -> ExportList:
    answer = await clients.history.ListExports(
        history_pb2.ListExportsRequest(), timeout=settings.grpc_deadline_seconds, metadata=call_metadata(user.token)
    )
    return ExportList(items=[export_out(export, request) for export in answer.exports])


@router.get(
    "/v1/exports/{export_id}",
    response_model=ExportOut,
    summary="One of your exports: its status, progress and, once done, its download link",
    responses={401: UNAUTHORIZED, 404: NOT_FOUND},
)
async def get_export(
    request: Request, export_id: str, user: CurrentUser, clients: Clients, settings: AppSettings
) -> ExportOut:
    answer = await clients.history.GetExport(
        history_pb2.GetExportRequest(export_id=export_id),
        timeout=settings.grpc_deadline_seconds,
        metadata=call_metadata(user.token),
    )
    return export_out(answer.export, request)


@router.get(
    "/v1/exports/download/{token}",
    summary="Download an export's ZIP through the download_url of a done export",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "The ZIP archive",
            "content": {"application/zip": {"schema": {"type": "string", "format": "binary"}}},
            "headers": {"Content-Length": {"schema": {"type": "integer"}}},
        },
        404: problem("Expired or forged link, or the archive was deleted"),
    },
)
async def download_export(token: str, clients: Clients, settings: AppSettings) -> StreamingResponse:
    if len(token) > 2048:
        raise Problem(404, "not-found", "this link has expired or does not exist")
    call = clients.history.DownloadExport(
        history_pb2.DownloadExportRequest(token=token),
        timeout=settings.export_download_deadline_seconds,
        metadata=call_metadata(),
    )
    stream = call.__aiter__()
    try:
        # The first message carries the size and name, and surfaces a refused link as an error
        # answer before any byte of the archive is sent.
        first: history_pb2.DownloadExportResponse = await stream.__anext__()
    except StopAsyncIteration:
        raise Problem(404, "not-found", "this link has expired or does not exist") from None

    async def body() -> AsyncIterator[bytes]:
        try:
            yield first.data
            async for message in stream:
                yield message.data
        except grpc.aio.AioRpcError:
            # The archive broke off half-way: end the body short, so the client sees a failed download.
            call.cancel()
            raise
        finally:
            call.cancel()

    filename = first.filename or "export.zip"
    return StreamingResponse(
        body(),
        media_type="application/zip",
        headers={
            "Content-Length": str(first.total_size),
            "Content-Disposition": f"attachment; filename=\"{filename}\"; filename*=UTF-8''{quote(filename)}",
            "Cache-Control": "private, no-store",
            "X-Content-Type-Options": "nosniff",
        },
    )
