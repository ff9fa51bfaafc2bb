"""A user's own images: upload, read, list, delete; and the download links."""

from __future__ import annotations

from datetime import UTC
from typing import Annotated

from fastapi import File, Form, Header, Query, Request, Response, UploadFile, status

from facerestore.history.v1 import history_pb2
from facerestore.upload.v1 import upload_pb2
from facerestore_common.grpc_client import call_metadata
from facerestore_common.restoration_options import MAX_CHOSEN_FACES
from gateway_service.convert import image_fields, model_json, options_fields
from gateway_service.dependencies import AppSettings, Clients, CurrentUser, Models, UploadQuota
from gateway_service.model_choice import OptionsAsked, resolved
from gateway_service.openapi_document import api_router
from gateway_service.page_cache import keep_answer
from gateway_service.problems import Problem
from gateway_service.responses import NOT_FOUND, UNAUTHORIZED, UNAVAILABLE, problem, rate_limited
from gateway_service.routes.library import Filters, IncludeRestored, image_with_inline
from gateway_service.schemas import ImageOut, ImagePage, ModelChoice, RestorationOut

router = api_router("images")


@router.post(
    "/v1/images",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=ImageOut,
    summary="Upload a face photo (JPEG or PNG, at most 1 MB) for restoration",
    responses={
        401: UNAUTHORIZED,
        409: problem(
            "model-unavailable: no live worker can run the model asked for (the body names it); or "
            "idempotency-key-in-use: an upload with this Idempotency-Key is still in progress"
        ),
        413: problem("Larger than 1 MB"),
        415: problem("Not a JPEG or PNG"),
        422: problem(
            "Not decodable, too small or too large in pixels, a polyglot, bad metadata, a reused Idempotency-Key, "
            "invalid options (validation-error), or an option the model lacks (option-unsupported)"
        ),
        429: rate_limited("More than the hourly upload quota, or too many requests from this address"),
        503: UNAVAILABLE,
    },
)
async def upload_image(
    request: Request,
    user: CurrentUser,
    quota: UploadQuota,
    clients: Clients,
    settings: AppSettings,
    models: Models,
    file: Annotated[UploadFile, File(description="The photo")],
    tags: Annotated[str | None, Form(description="Comma-separated tags", max_length=400)] = None,
    note: Annotated[str | None, Form(max_length=500)] = None,
    location: Annotated[str | None, Form(max_length=100)] = None,
    model: Annotated[
        ModelChoice, Form(description="`auto` (default): the best model that can run now; see GET /v1/models")
    ] = "auto",
    fidelity: Annotated[
        float | None,
        Form(ge=0.0, le=1.0, description="0 (strongest restoration) to 1 (closest to the input); CodeFormer only"),
    ] = None,
    faces: Annotated[
        str | None,
        Form(
            max_length=400,
            description="Comma-separated indexes of the faces to restore, e.g. `0,2` (an image's detected_faces; "
            "the others are pasted back untouched); default every face",
            pattern=r"^\s*\d{1,3}\s*(,\s*\d{1,3}\s*)*$",
        ),
    ] = None,
    upscale: Annotated[int, Form(ge=1, le=2, description="2: the result is twice the original's size")] = 1,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            max_length=255,
            description="Repeat a request safely: the same key within 24 h returns the first upload",
        ),
    ] = None,
) -> ImageOut:
    content = await file.read(settings.max_upload_bytes + 1)
    if len(content) > settings.max_upload_bytes:
        raise Problem(413, "payload-too-large", f"the file is larger than {settings.max_upload_bytes} bytes")
    chosen_faces = [int(index) for index in (faces or "").split(",") if index.strip()]
    if len(chosen_faces) > MAX_CHOSEN_FACES:
        raise Problem(
            422,
            "validation-error",
            "the request is not valid",
            errors=[{"loc": ["body", "faces"], "msg": f"at most {MAX_CHOSEN_FACES} faces"}],
        )
    options = await resolved(models, OptionsAsked(model=model, fidelity=fidelity, faces=chosen_faces, upscale=upscale))
    response = await clients.upload.CreateUpload(
        upload_pb2.CreateUploadRequest(
            content=content,
            filename=file.filename or "",
            tags=[tag for tag in (tags or "").split(",") if tag.strip()],
            note=note or "",
            location=location or "",
            idempotency_key=idempotency_key or "",
            options=options,
            requested_model=model,
        ),
        timeout=settings.upload_deadline_seconds,
        metadata=call_metadata(user.token),
    )
    if response.replayed:
        # The first upload with this Idempotency-Key was counted; its answer again is not a new upload.
        await quota.take_back()
    return ImageOut(
        id=response.image_id,
        status="queued",
        created_at=response.created_at.ToDatetime(tzinfo=UTC),
        width=response.width,
        height=response.height,
        tags=list(response.tags),
        note=response.note,
        location=response.location,
        restorations=[
            RestorationOut.model_validate(
                {
                    "id": response.restoration_id,
                    "options": options_fields(response.options),
                    "status": "queued",
                    "created_at": response.created_at.ToDatetime(tzinfo=UTC),
                }
            )
        ],
        preferred_restoration=response.restoration_id,
    )


@router.get(
    "/v1/images",
    response_model=ImagePage,
    summary="Your images, newest first, filtered (filters combine: an image must pass each)",
    responses={401: UNAUTHORIZED, 422: problem("invalid-filter: a filter is out of range or `from` is after `to`")},
)
async def list_images(
    request: Request,
    user: CurrentUser,
    clients: Clients,
    settings: AppSettings,
    filters: Filters,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[
        str | None, Query(max_length=200, description="next_cursor of the previous page (same filters)")
    ] = None,
) -> Response:
    response = await clients.history.ListImages(
        filters.request(limit, cursor or ""),
        timeout=settings.grpc_deadline_seconds,
        metadata=call_metadata(user.token),
    )
    # An ImagePage's JSON straight from plain values: no model built, validated and dumped per image.
    page = model_json(
        {
            "items": [image_fields(image, request) for image in response.images],
            "next_cursor": response.next_cursor or None,
            "counts": dict(response.counts) if filters.counts else None,
        }
    )
    return keep_answer(request, user, page)


@router.get(
    "/v1/images/{image_id}",
    response_model=ImageOut,
    summary="One of your images",
    responses={
        401: UNAUTHORIZED,
        404: NOT_FOUND,
        422: problem("inline-too-large: the restored image is too large to inline; download it from restored_url"),
    },
)
async def get_image(
    request: Request,
    image_id: str,
    user: CurrentUser,
    clients: Clients,
    settings: AppSettings,
    include_restored: IncludeRestored,
) -> Response:
    response = await clients.history.GetImage(
        history_pb2.GetImageRequest(image_id=image_id, include_restored=include_restored),
        timeout=settings.grpc_deadline_seconds,
        metadata=call_metadata(user.token),
    )
    return keep_answer(request, user, model_json(image_with_inline(response, request)))


@router.delete(
    "/v1/images/{image_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete one of your images and every file made from it",
    responses={401: UNAUTHORIZED, 404: NOT_FOUND},
)
async def delete_image(image_id: str, user: CurrentUser, clients: Clients, settings: AppSettings) -> Response:
    await clients.history.DeleteImage(
        history_pb2.DeleteImageRequest(image_id=image_id),
        timeout=settings.grpc_deadline_seconds,
        metadata=call_metadata(user.token),
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/v1/files/{token}",
    name="download_file",
    summary="Download an image through a short-lived link from an image's *_url field",
    response_class=Response,
    responses={
        200: {"content": {"image/jpeg": {}, "image/png": {}}},
        404: problem("Expired, forged, or the image was deleted"),
    },
)
async def download_file(token: str, clients: Clients, settings: AppSettings) -> Response:
    if len(token) > 2048:
        raise Problem(404, "not-found", "this link has expired or does not exist")
    response = await clients.history.GetContent(
        history_pb2.GetContentRequest(token=token), timeout=settings.grpc_deadline_seconds, metadata=call_metadata()
    )
    return Response(
        content=response.content,
        media_type=response.content_type,
        headers={"Cache-Control": "private, max-age=60", "X-Content-Type-Options": "nosniff"},
    )
