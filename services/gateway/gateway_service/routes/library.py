"""A user's library: filters of their list, an image's result inline, edits of tags, note and
location, feedback on a result, and deleting every image at once."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import Depends, Query, Request, status
from google.protobuf.timestamp_pb2 import Timestamp
from pydantic import BaseModel, ConfigDict, Field, field_validator

from facerestore.history.v1 import history_pb2
from facerestore_common.grpc_client import call_metadata
from gateway_service.convert import feedback_fields, image_fields, image_out
from gateway_service.dependencies import AppSettings, Clients, CurrentUser
from gateway_service.openapi_document import api_router
from gateway_service.problems import Problem
from gateway_service.responses import INVALID, NOT_FOUND, UNAUTHORIZED, problem
from gateway_service.schemas import FeedbackOut, ImageOut

router = api_router("images")

ImageStatus = Literal["queued", "processing", "done", "failed"]
FilterTag = Annotated[str, Field(min_length=1, max_length=32)]
EDIT_ERRORS: dict[int | str, dict[str, Any]] = {
    401: UNAUTHORIZED,
    404: problem(
        "not-found: unknown, deleted, or someone else's image; or restoration-not-found: the image has no "
        "restoration with that id"
    ),
    409: problem("restoration-not-done: only a done restoration can be preferred"),
    422: problem(
        "invalid-metadata: a tag, the note or the location breaks the upload's rules (or validation-error: "
        "the body is not a merge-patch of tags, note, location and preferred_restoration)"
    ),
}


def _utc(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    stamp = Timestamp()
    try:
        stamp.FromDatetime((value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC))
    except (OverflowError, ValueError):
        raise Problem(422, "invalid-filter", "the time is out of range") from None
    return stamp


@dataclass(frozen=True)
class ImageFilters:
    """The query of GET /v1/images beyond paging."""

    statuses: list[str]
    tags: list[str]
    created_from: Timestamp | None
    created_to: Timestamp | None
    location: str
    q: str
    counts: bool

    def request(self, limit: int, cursor: str) -> history_pb2.ListImagesRequest:
        request = history_pb2.ListImagesRequest(
            limit=limit,
            cursor=cursor,
            statuses=self.statuses,
            tags=self.tags,
            location=self.location,
            query=self.q,
            include_counts=self.counts,
        )
        if self.created_from is not None:
            request.created_from.CopyFrom(self.created_from)
        if self.created_to is not None:
            request.created_to.CopyFrom(self.created_to)
        return request


async def image_filters(
    status_: Annotated[
        list[ImageStatus] | None,
        Query(alias="status", description="Only images in any of these statuses (repeat the parameter)"),
    ] = None,
    tag: Annotated[
        list[FilterTag] | None,
        Query(max_length=10, description="Only images with any of these tags (repeat the parameter; up to 10)"),
    ] = None,
    from_: Annotated[
        datetime | None,
        Query(alias="from", description="Only images created at or after this time (ISO 8601; UTC without offset)"),
    ] = None,
    to: Annotated[datetime | None, Query(description="Only images created at or before this time (ISO 8601)")] = None,
    location: Annotated[
        str | None, Query(max_length=100, description="Only images with exactly this location (trimmed)")
    ] = None,
    q: Annotated[
        str | None,
        Query(
            max_length=200,
            description="Words that must each be a word of the note or of a tag (case-insensitive; up to 10)",
        ),
    ] = None,
    counts: Annotated[
        bool, Query(description="Also count your images per status among those the other filters keep")
    ] = False,
) -> ImageFilters:
    created_from, created_to = _utc(from_), _utc(to)
    if (
        created_from is not None
        and created_to is not None
        and created_from.ToNanoseconds() > created_to.ToNanoseconds()
    ):
        raise Problem(422, "invalid-filter", "`from` is after `to`")
    return ImageFilters(
        statuses=list(dict.fromkeys(status_ or [])),
        tags=tag or [],
        created_from=created_from,
        created_to=created_to,
        location=location or "",
        q=q or "",
        counts=counts,
    )


Filters = Annotated[ImageFilters, Depends(image_filters)]


async def include_restored(
    include: Annotated[
        list[Literal["restored_base64"]] | None,
        Query(
            description="`restored_base64`: put the restored JPEG in the answer, base64, "
            "for clients that cannot follow links"
        ),
    ] = None,
) -> bool:
    return "restored_base64" in (include or [])


IncludeRestored = Annotated[bool, Depends(include_restored)]


def image_with_inline(response: history_pb2.GetImageResponse, request: Request) -> dict[str, object]:
    """An ImageOut's fields as plain values, with the restored image inline when it was asked for."""
    image = image_fields(response.image, request)
    if response.restored_content:
        image["restored_base64"] = base64.b64encode(response.restored_content).decode("ascii")
    return image


class ImagePatch(BaseModel):
    """A JSON merge-patch (RFC 7396) of what you wrote about an image: a member you send replaces
    the stored value, `null` clears it, a member you leave out stays as it is."""

    model_config = ConfigDict(extra="forbid")

    tags: list[Annotated[str, Field(max_length=64)]] | None = Field(
        default=None,
        max_length=32,
        description="Replaces every tag: up to 10 of 1 to 32 letters, digits, spaces, dots, dashes or underscores "
        "(stored trimmed and lower-case, duplicates dropped)",
    )
    note: str | None = Field(
        default=None,
        max_length=2000,
        description="Up to 500 characters of Unicode text (emoji sequences included); line breaks and tabs "
        "allowed, other control characters not",
    )
    location: str | None = Field(
        default=None, max_length=400, description="Up to 100 characters of Unicode text on one line"
    )
    preferred_restoration: str | None = Field(
        default=None,
        pattern=r"^r[1-9][0-9]{0,5}$",
        description="Show this version (an id from `restorations`, e.g. `r2`; it must be done): the image's "
        "result, quality, status and export follow it",
    )

    @field_validator("preferred_restoration")
    @classmethod
    def _not_null(cls, value: str | None) -> str:
        # A version is always preferred (r1 by default): it can be changed, not cleared.
        if value is None:
            raise ValueError("preferred_restoration cannot be null; send a restoration id")
        return value


class FeedbackIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rating: int = Field(ge=1, le=5, description="1 (poor) to 5 (excellent)")
    comment: str = Field(default="", max_length=2000, description="Up to 500 characters of Unicode text")


class DeletedAll(BaseModel):
    deleted: int = Field(description="How many images were deleted")


@router.patch(
    "/v1/images/{image_id}",
    response_model=ImageOut,
    summary="Edit the tags, note or location of one of your images, or choose the version it shows (JSON merge-patch)",
    responses=EDIT_ERRORS,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/merge-patch+json": {"schema": {"$ref": "#/components/schemas/ImagePatch"}},
                "application/json": {"schema": {"$ref": "#/components/schemas/ImagePatch"}},
            },
        }
    },
)
async def update_image(
    request: Request, image_id: str, patch: ImagePatch, user: CurrentUser, clients: Clients, settings: AppSettings
) -> ImageOut:
    sent = patch.model_fields_set
    message = history_pb2.UpdateImageRequest(image_id=image_id)
    if "tags" in sent:
        message.tags.CopyFrom(history_pb2.StringList(values=patch.tags or []))
    if "note" in sent:
        message.note = patch.note or ""
    if "location" in sent:
        message.location = patch.location or ""
    if "preferred_restoration" in sent and patch.preferred_restoration is not None:
        message.preferred_restoration = patch.preferred_restoration
    response = await clients.history.UpdateImage(
        message, timeout=settings.grpc_deadline_seconds, metadata=call_metadata(user.token)
    )
    return image_out(response.image, request)


@router.post(
    "/v1/images/{image_id}/feedback",
    response_model=FeedbackOut,
    summary="Rate the result of one of your images (again: the new rating replaces the old)",
    responses={
        401: UNAUTHORIZED,
        404: NOT_FOUND,
        409: problem("not-restored: the image is not restored (yet, or its restoration failed)"),
        422: INVALID,
    },
)
async def rate_image(
    image_id: str, feedback: FeedbackIn, user: CurrentUser, clients: Clients, settings: AppSettings
) -> FeedbackOut:
    response = await clients.history.GiveFeedback(
        history_pb2.GiveFeedbackRequest(image_id=image_id, rating=feedback.rating, comment=feedback.comment),
        timeout=settings.grpc_deadline_seconds,
        metadata=call_metadata(user.token),
    )
    return FeedbackOut.model_validate(feedback_fields(response.feedback))


@router.delete(
    "/v1/images",
    status_code=status.HTTP_200_OK,
    response_model=DeletedAll,
    summary="Delete all your images and every file made from them",
    responses={401: UNAUTHORIZED},
)
async def delete_all_images(user: CurrentUser, clients: Clients, settings: AppSettings) -> DeletedAll:
    response = await clients.history.DeleteAllImages(
        history_pb2.DeleteAllImagesRequest(), timeout=settings.grpc_deadline_seconds, metadata=call_metadata(user.token)
    )
    return DeletedAll(deleted=response.deleted)
