"""Closing one's account: DELETE /v1/me erases the user and everything of theirs."""

from __future__ import annotations

from fastapi import status
from pydantic import BaseModel, Field

from facerestore.auth.v1 import auth_pb2
from facerestore_common.grpc_client import call_metadata
from gateway_service.dependencies import AppSettings, Clients, CurrentUser
from gateway_service.openapi_document import api_router
from gateway_service.responses import UNAUTHORIZED

router = api_router("auth")


class AccountErased(BaseModel):
    erasure_id: str = Field(description="Names this erasure (it does not name you) if you contact support about it")
    status: str = Field(
        default="erasing",
        description="The account is closed (every token refused, phone number and email free); "
        "your images, files, faces, feedback and exports are being erased",
    )


@router.delete(
    "/v1/me",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=AccountErased,
    summary="Erase your account and everything of yours (images, files, faces, feedback, exports, sessions)",
    responses={401: UNAUTHORIZED},
)
async def delete_account(user: CurrentUser, clients: Clients, settings: AppSettings) -> AccountErased:
    response = await clients.auth.DeleteAccount(
        auth_pb2.DeleteAccountRequest(), timeout=settings.grpc_deadline_seconds, metadata=call_metadata(user.token)
    )
    return AccountErased(erasure_id=response.erasure_id)
