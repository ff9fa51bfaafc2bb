"""Admin-only views and moderation."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query, Request, Response, status

from facerestore.admin.v1 import admin_pb2
from facerestore_common.grpc_client import call_metadata
from gateway_service.convert import admin_image_out, user_out
from gateway_service.dependencies import AdminUser, AppSettings, Clients
from gateway_service.openapi_document import api_router
from gateway_service.responses import FORBIDDEN, INVALID, NOT_FOUND, UNAUTHORIZED, Responses, problem
from gateway_service.schemas import AdminImagePage, BanRequest, UserOut, UserPage

router = api_router("admin")
_admin_errors: Responses = {401: UNAUTHORIZED, 403: FORBIDDEN}

Limit = Annotated[int, Query(ge=1, le=100)]
Cursor = Annotated[str | None, Query(max_length=200)]


@router.get(
    "/v1/admin/users",
    response_model=UserPage,
    summary="All users, or the one with a phone number",
    responses={**_admin_errors, 422: INVALID},
)
async def list_users(
    admin: AdminUser,
    clients: Clients,
    settings: AppSettings,
    limit: Limit = 50,
    cursor: Cursor = None,
    phone: Annotated[
        str | None,
        Query(
            min_length=3,
            max_length=32,
            description="Only the user with this phone number, written in any format it parses from "
            "(`+49 151 2345 6789`); an invalid number is 422 `invalid-phone`.",
        ),
    ] = None,
) -> UserPage:
    response = await clients.admin.ListUsers(
        admin_pb2.ListUsersRequest(limit=limit, cursor=cursor or "", phone=phone or ""),
        timeout=settings.grpc_deadline_seconds,
        metadata=call_metadata(admin.token),
    )
    return UserPage(items=[user_out(user) for user in response.users], next_cursor=response.next_cursor or None)


@router.get(
    "/v1/admin/images",
    response_model=AdminImagePage,
    summary="Everyone's images, newest first",
    responses=_admin_errors,
)
async def list_images(
    request: Request,
    admin: AdminUser,
    clients: Clients,
    settings: AppSettings,
    limit: Limit = 20,
    cursor: Cursor = None,
    user_id: Annotated[str | None, Query(max_length=64)] = None,
) -> AdminImagePage:
    response = await clients.admin.ListImages(
        admin_pb2.ListImagesRequest(limit=limit, cursor=cursor or "", user_id=user_id or ""),
        timeout=settings.grpc_deadline_seconds,
        metadata=call_metadata(admin.token),
    )
    return AdminImagePage(
        items=[admin_image_out(image, request) for image in response.images], next_cursor=response.next_cursor or None
    )


@router.delete(
    "/v1/admin/images/{image_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Remove anyone's image (recorded in the audit log)",
    responses={**_admin_errors, 404: NOT_FOUND},
)
async def delete_image(
    image_id: str,
    admin: AdminUser,
    clients: Clients,
    settings: AppSettings,
    reason: Annotated[str | None, Query(max_length=500)] = None,
) -> Response:
    await clients.admin.DeleteImage(
        admin_pb2.DeleteImageRequest(image_id=image_id, reason=reason or ""),
        timeout=settings.grpc_deadline_seconds,
        metadata=call_metadata(admin.token),
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


async def _set_banned(
    user_id: str, banned: bool, reason: str, admin: AdminUser, clients: Clients, settings: AppSettings
) -> UserOut:
    response = await clients.admin.SetUserBanned(
        admin_pb2.SetUserBannedRequest(user_id=user_id, banned=banned, reason=reason),
        timeout=settings.grpc_deadline_seconds,
        metadata=call_metadata(admin.token),
    )
    return user_out(response.user)


@router.post(
    "/v1/admin/users/{user_id}/ban",
    response_model=UserOut,
    summary="Ban a user: their sessions end at once; they cannot sign in or refresh (audited)",
    responses={**_admin_errors, 404: NOT_FOUND, 422: problem("An admin cannot ban themselves")},
)
async def ban_user(
    user_id: str, body: BanRequest, admin: AdminUser, clients: Clients, settings: AppSettings
) -> UserOut:
    return await _set_banned(user_id, True, body.reason, admin, clients, settings)


@router.delete(
    "/v1/admin/users/{user_id}/ban",
    response_model=UserOut,
    summary="Lift a ban (audited)",
    responses={**_admin_errors, 404: NOT_FOUND},
)
async def unban_user(user_id: str, admin: AdminUser, clients: Clients, settings: AppSettings) -> UserOut:
    return await _set_banned(user_id, False, "", admin, clients, settings)
