"""Moderation: owners report a result; admins read the queue of reported and low-rated images,
hide an image pending review, show it again, or dismiss a case (deleting is in admin.py). Every
decision needs a reason and is written to the audit log."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Literal, TypeVar

from fastapi import Query, Request, Response, status

from facerestore.admin.v1 import admin_pb2
from facerestore.history.v1 import history_pb2
from facerestore_common.grpc_client import call_metadata
from gateway_service.admin_convert import case_out
from gateway_service.admin_schemas import ModerationPage, ReasonRequest, ReportRequest
from gateway_service.dependencies import AdminUser, AppSettings, Clients, CurrentUser
from gateway_service.openapi_document import api_router
from gateway_service.responses import FORBIDDEN, INVALID, NOT_FOUND, UNAUTHORIZED, Responses

router = api_router()
_admin_errors: Responses = {401: UNAUTHORIZED, 403: FORBIDDEN}
Route = TypeVar("Route", bound=Callable[..., Awaitable[Response]])


@router.post(
    "/v1/images/{image_id}/report",
    status_code=status.HTTP_204_NO_CONTENT,
    tags=["images"],
    summary="Report the result of one of your images (it goes to the admins' moderation queue)",
    responses={401: UNAUTHORIZED, 404: NOT_FOUND, 422: INVALID},
)
async def report_image(
    image_id: str, body: ReportRequest, user: CurrentUser, clients: Clients, settings: AppSettings
) -> Response:
    await clients.history.ReportImage(
        history_pb2.ReportImageRequest(image_id=image_id, reason=body.reason, note=body.note),
        timeout=settings.grpc_deadline_seconds,
        metadata=call_metadata(user.token),
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/v1/admin/moderation",
    response_model=ModerationPage,
    tags=["admin"],
    summary="Images reported by their owners or rated low, the longest waiting first",
    responses=_admin_errors,
)
async def list_moderation(
    request: Request,
    admin: AdminUser,
    clients: Clients,
    settings: AppSettings,
    status_: Annotated[Literal["open", "resolved", "all"], Query(alias="status")] = "open",
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> ModerationPage:
    response = await clients.admin.ListModeration(
        admin_pb2.ListModerationRequest(status=status_, limit=limit, cursor=cursor or ""),
        timeout=settings.grpc_deadline_seconds,
        metadata=call_metadata(admin.token),
    )
    return ModerationPage(
        items=[case_out(case, request) for case in response.cases], next_cursor=response.next_cursor or None
    )


async def _set_hidden(
    image_id: str, hidden: bool, body: ReasonRequest, admin: AdminUser, clients: Clients, settings: AppSettings
) -> Response:
    await clients.admin.SetImageHidden(
        admin_pb2.SetImageHiddenRequest(image_id=image_id, hidden=hidden, reason=body.reason),
        timeout=settings.grpc_deadline_seconds,
        metadata=call_metadata(admin.token),
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def _decision(path: str, summary: str) -> Callable[[Route], Route]:
    """An admin's audited decision about one image, answered 204."""
    return router.post(
        path,
        status_code=status.HTTP_204_NO_CONTENT,
        tags=["admin"],
        summary=summary,
        responses={**_admin_errors, 404: NOT_FOUND, 422: INVALID},
    )


@_decision(
    "/v1/admin/images/{image_id}/hide",
    "Hide an image pending review: its owner sees it under review, searches leave it out (audited)",
)
async def hide_image(
    image_id: str, body: ReasonRequest, admin: AdminUser, clients: Clients, settings: AppSettings
) -> Response:
    return await _set_hidden(image_id, True, body, admin, clients, settings)


@_decision("/v1/admin/images/{image_id}/show", "Show a hidden image again; its moderation case is resolved (audited)")
async def show_image(
    image_id: str, body: ReasonRequest, admin: AdminUser, clients: Clients, settings: AppSettings
) -> Response:
    return await _set_hidden(image_id, False, body, admin, clients, settings)


@_decision(
    "/v1/admin/moderation/{image_id}/dismiss",
    "Close a moderation case without action; a hidden image is shown again (audited)",
)
async def dismiss_case(
    image_id: str, body: ReasonRequest, admin: AdminUser, clients: Clients, settings: AppSettings
) -> Response:
    await clients.admin.DismissModeration(
        admin_pb2.DismissModerationRequest(image_id=image_id, reason=body.reason),
        timeout=settings.grpc_deadline_seconds,
        metadata=call_metadata(admin.token),
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)
