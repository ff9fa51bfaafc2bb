"""Restoration models and versions: which models can run now, and restoring one of your stored
images again with other options (a new version; choose the one you prefer with PATCH)."""

from __future__ import annotations

from datetime import UTC
from typing import Annotated

from fastapi import Header, status

from facerestore.history.v1 import history_pb2
from facerestore.upload.v1 import upload_pb2
from facerestore_common.grpc_client import call_metadata
from facerestore_common.model_registry import auto_choice
from facerestore_common.topology import RESTORER_FAMILIES
from gateway_service.convert import options_fields
from gateway_service.dependencies import AppSettings, Clients, CurrentUser, Models, UploadQuota
from gateway_service.model_choice import OptionsAsked, live_models, resolved
from gateway_service.openapi_document import api_router
from gateway_service.responses import NOT_FOUND, UNAUTHORIZED, UNAVAILABLE, problem, rate_limited
from gateway_service.schemas import RestorationModelList, RestorationModelOut, RestorationOut, RestorationRequest

router = api_router()

REPROCESS_CONFLICT = problem(
    "model-unavailable: no live worker can run the model asked for (the body names it); or "
    "idempotency-key-in-use: a restoration with this Idempotency-Key is still in progress"
)
REPROCESS_UNPROCESSABLE = problem(
    "option-unsupported: the model has no such option (fidelity, upscale 2); validation-error: the request is not "
    "valid; idempotency-key-reused: this Idempotency-Key was used for this image with other options; or "
    "invalid-idempotency-key"
)


@router.get(
    "/v1/models",
    response_model=RestorationModelList,
    tags=["models"],
    summary="The restoration models, whether each can run now, and what `auto` picks",
    responses={401: UNAUTHORIZED},
)
async def list_models(user: CurrentUser, models: Models) -> RestorationModelList:
    available = await live_models(models)
    listed = []
    for name in RESTORER_FAMILIES:
        offer = available.get(name)
        listed.append(
            RestorationModelOut(name=name, available=False)  # type: ignore[arg-type]
            if offer is None
            else RestorationModelOut(
                name=name,  # type: ignore[arg-type]
                available=True,
                model_id=offer.model_id,
                version=offer.version,
                sha256=offer.sha256 or None,
                supports_fidelity=offer.supports_fidelity,
                default_fidelity=offer.default_fidelity,
                max_upscale=offer.max_upscale,
            )
        )
    auto = auto_choice(available)
    return RestorationModelList(models=listed, auto=auto)  # type: ignore[arg-type]


@router.post(
    "/v1/images/{image_id}/restorations",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=RestorationOut,
    tags=["images"],
    summary="Restore one of your stored images again with other options: a new version, queued",
    responses={
        401: UNAUTHORIZED,
        404: NOT_FOUND,
        409: REPROCESS_CONFLICT,
        422: REPROCESS_UNPROCESSABLE,
        429: rate_limited("More than the hourly upload quota (a reprocess counts as an upload, a replay does not)"),
        503: UNAVAILABLE,
    },
)
async def create_restoration(
    image_id: str,
    asked: RestorationRequest,
    user: CurrentUser,
    quota: UploadQuota,
    clients: Clients,
    settings: AppSettings,
    models: Models,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            max_length=255,
            description="Repeat a request safely: the same key for this image within 24 h returns the first "
            "restoration (same id) and spends no quota",
        ),
    ] = None,
) -> RestorationOut:
    # Someone else's, deleted or unknown: 404 before anything else is looked at.
    await clients.history.GetImage(
        history_pb2.GetImageRequest(image_id=image_id),
        timeout=settings.grpc_deadline_seconds,
        metadata=call_metadata(user.token),
    )
    options = await resolved(
        models, OptionsAsked(model=asked.model, fidelity=asked.fidelity, faces=asked.faces, upscale=asked.upscale)
    )
    response = await clients.upload.CreateRestoration(
        upload_pb2.CreateRestorationRequest(
            image_id=image_id, options=options, idempotency_key=idempotency_key or "", requested_model=asked.model
        ),
        timeout=settings.grpc_deadline_seconds,
        metadata=call_metadata(user.token),
    )
    if response.replayed:
        # The first request with this Idempotency-Key was counted; its answer again is not a new version.
        await quota.take_back()
    return RestorationOut.model_validate(
        {
            "id": response.restoration_id,
            "options": options_fields(response.options),
            "status": response.status,
            "created_at": response.created_at.ToDatetime(tzinfo=UTC),
        }
    )
