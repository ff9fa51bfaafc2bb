"""Similar-face search: with a photo (multipart, never stored) or with a face already in the
caller's history (JSON). A user searches their own faces; scope=all goes through the admin
service, which refuses non-admins and records the search in the audit log."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import grpc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from pydantic.json_schema import models_json_schema
from starlette.datastructures import UploadFile

from facerestore.admin.v1 import admin_pb2
from facerestore.history.v1 import history_pb2
from facerestore_common.grpc_client import call_metadata
from gateway_service.convert import search_result_out
from gateway_service.dependencies import AppSettings, Clients, CurrentUser, SearchQuota
from gateway_service.openapi_document import api_router
from gateway_service.problems import Problem
from gateway_service.responses import UNAUTHORIZED, problem, rate_limited
from gateway_service.schemas import SearchByFace, SearchOptions, SearchResult, SearchUpload

router = api_router("search")

MULTIPART = "multipart/form-data"
JSON = "application/json"
# Form fields other than the file and the repeatable tag; an empty value counts as not given.
_FORM_FIELDS = ("top_k", "min_score", "from", "to", "location", "scope", "face")
_REQUEST_MODELS: tuple[type[BaseModel], ...] = (SearchUpload, SearchByFace)
_RATE_LIMIT_HEADERS = {
    name: {"description": text, "schema": {"type": "string"}}
    for name, text in {
        "RateLimit-Limit": "Searches allowed per window (searches-per-user)",
        "RateLimit-Remaining": "Searches left in the current window",
        "RateLimit-Reset": "Seconds until the window frees a search",
        "RateLimit-Policy": "The limit and its window, e.g. 30;w=60",
    }.items()
}


def _request_body() -> dict[str, Any]:
    return {
        "required": True,
        "content": {
            MULTIPART: {
                "schema": {"$ref": "#/components/schemas/SearchUpload"},
                "encoding": {"file": {"contentType": "image/jpeg, image/png"}},
            },
            JSON: {"schema": {"$ref": "#/components/schemas/SearchByFace"}},
        },
    }


def _invalid(error: ValidationError) -> RequestValidationError:
    return RequestValidationError(
        [{"loc": ("body", *error["loc"]), "msg": error["msg"], "type": error["type"]} for error in error.errors()]
    )


def _missing_file() -> RequestValidationError:
    return RequestValidationError([{"loc": ("body", "file"), "msg": "a photo file is required", "type": "missing"}])


async def _photo_query(request: Request, max_bytes: int) -> tuple[history_pb2.SearchFacesRequest, SearchOptions]:
    form = await request.form(max_files=1, max_fields=len(_FORM_FIELDS) + 20)
    file = form.get("file")
    if not isinstance(file, UploadFile):
        raise _missing_file()
    content = await file.read(max_bytes + 1)
    if len(content) > max_bytes:
        raise Problem(413, "payload-too-large", f"the file is larger than {max_bytes} bytes")
    if not content:
        raise RequestValidationError([{"loc": ("body", "file"), "msg": "the file is empty", "type": "missing"}])
    fields: dict[str, Any] = {name: form[name] for name in _FORM_FIELDS if form.get(name) not in (None, "")}
    fields["tag"] = [tag for tag in form.getlist("tag") if tag != ""]
    try:
        options = SearchUpload.model_validate({**fields, "file": content})
    except ValidationError as error:
        raise _invalid(error) from None
    search = history_pb2.SearchFacesRequest(image=content)
    if options.face is not None:
        search.query_face = options.face
    return search, options


async def _stored_face_query(request: Request) -> tuple[history_pb2.SearchFacesRequest, SearchOptions]:
    try:
        options = SearchByFace.model_validate_json(await request.body())
    except ValidationError as error:
        raise _invalid(error) from None
    face = history_pb2.FaceRef(image_id=options.image_id, face_index=options.face_index)
    return history_pb2.SearchFacesRequest(face=face), options


def _apply_options(search: history_pb2.SearchFacesRequest, options: SearchOptions) -> None:
    search.top_k = options.top_k
    search.min_score = options.min_score
    # Stored the way uploads store them: tags trimmed and lower case, the location trimmed.
    tags = dict.fromkeys(tag.strip().lower() for tag in options.tag)
    search.filters.tags.extend(tag for tag in tags if tag)
    search.filters.location = (options.location or "").strip()
    bounds: tuple[tuple[datetime | None, str], ...] = (
        (options.from_, "created_from"),
        (options.to, "created_to"),
    )
    for value, field in bounds:
        if value is not None:
            getattr(search.filters, field).FromDatetime(value)


@router.post(
    "/v1/search",
    response_model=SearchResult,
    summary="Find the faces most similar to a photo's face, or to a face in your history",
    description=(
        "Send `multipart/form-data` with a photo in `file` (JPEG or PNG, at most 1 MB, never stored) or "
        "`application/json` naming a face of one of your images (`image_id`, `face_index`). Matches come best "
        "first with `score`, the cosine similarity mapped to 0..1. Filters: `from`/`to` (creation time), "
        "`location`, `tag` (any of). `scope=all` searches everyone's faces (admins only, audited)."
    ),
    openapi_extra={"requestBody": _request_body()},
    responses={
        200: {"headers": _RATE_LIMIT_HEADERS},
        401: UNAUTHORIZED,
        403: problem("forbidden: scope=all without the admin role"),
        404: problem("face-not-found: the image is unknown, someone else's, not restored, or has no such face"),
        413: problem("payload-too-large: the photo is larger than 1 MB"),
        415: problem("unsupported-media-type: the photo is not a JPEG or PNG, or the body is neither form nor JSON"),
        422: problem(
            "no-face-found: no face in the photo (or no face at `face`); validation-error; undecodable-image, "
            "image-too-small, image-too-large"
        ),
        429: rate_limited("More searches than searches-per-user allows, or too many requests from this address"),
        503: problem("embedder-unavailable: no worker embedded the photo in time; or a service is unavailable"),
    },
)
async def search_faces(
    request: Request, user: CurrentUser, quota: SearchQuota, clients: Clients, settings: AppSettings
) -> SearchResult:
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type == MULTIPART:
        search, options = await _photo_query(request, settings.max_upload_bytes)
    elif media_type == JSON:
        search, options = await _stored_face_query(request)
    else:
        raise Problem(
            415, "unsupported-media-type", f"send {MULTIPART} with a photo, or {JSON} naming one of your faces"
        )
    _apply_options(search, options)
    call: dict[str, Any] = {"timeout": settings.search_deadline_seconds, "metadata": call_metadata(user.token)}
    try:
        if options.scope == "all":
            # The admin service checks the role, records the search and asks history for every user's faces.
            result = (await clients.admin.SearchFaces(admin_pb2.SearchFacesRequest(search=search), **call)).result
        else:
            result = await clients.history.SearchFaces(search, **call)
    except grpc.aio.AioRpcError as error:
        # The one thing a search can fail to find is the stored face it was asked to start from.
        if error.code() == grpc.StatusCode.NOT_FOUND:
            raise Problem(404, "face-not-found", "no such face among the images you may search") from None
        raise
    return search_result_out(result, request, with_owner=options.scope == "all")


def document_request_bodies(app: FastAPI) -> None:
    """Put the request body schemas, which the route reads itself, among the named components."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        schema = generate()
        schemas = schema.setdefault("components", {}).setdefault("schemas", {})
        if not all(model.__name__ in schemas for model in _REQUEST_MODELS):
            _, definitions = models_json_schema(
                [(model, "validation") for model in _REQUEST_MODELS], ref_template="#/components/schemas/{model}"
            )
            schemas.update(definitions.get("$defs", {}))
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
