"""The public API's request and response bodies (the contract client apps build against)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class FieldError(BaseModel):
    loc: list[str | int] = Field(description="Where: body, query, path or header, then the field")
    msg: str


class ProblemDetails(BaseModel):
    type: str = Field(description="Stable URI naming the kind of problem")
    title: str
    status: int
    detail: str
    instance: str
    request_id: str
    limit: str | None = Field(default=None, description="For 429: the limit that was reached")
    retry_after: int | None = Field(default=None, description="For 429: seconds until a retry can succeed")
    errors: list[FieldError] | None = Field(default=None, description="For validation-error: what is wrong, where")
    model: str | None = Field(default=None, description="For model-unavailable: the model no worker can run now")


class OtpRequest(BaseModel):
    phone: str = Field(min_length=3, max_length=32, examples=["+14155550123"])


class OtpSent(BaseModel):
    phone: str = Field(description="The number in E.164 form")
    expires_in: int = Field(description="Seconds the code stays valid")


class OtpVerify(BaseModel):
    phone: str = Field(min_length=3, max_length=32)
    code: str = Field(min_length=1, max_length=12)


class RefreshRequest(BaseModel):
    refresh_token: str = Field(min_length=1, max_length=512)


class TokenResponse(BaseModel):
    access_token: str
    refresh_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 - the OAuth token type name
    expires_in: int


class UserOut(BaseModel):
    id: str
    phone: str
    role: Literal["user", "admin"]
    created_at: datetime
    last_login_at: datetime
    email: str | None = Field(default=None, description="The verified email address, if any")
    banned: bool = False


class EmailRequest(BaseModel):
    email: str = Field(min_length=3, max_length=254, examples=["anna@example.org"])


class EmailVerify(BaseModel):
    email: str = Field(min_length=3, max_length=254)
    code: str = Field(min_length=1, max_length=12)


class CodeSent(BaseModel):
    expires_in: int = Field(description="Seconds the code stays valid")


class BanRequest(BaseModel):
    reason: str = Field(default="", max_length=500)


class QualityOut(BaseModel):
    backend: str
    restorer_model: str = Field(default="", description="The weights (or method) that restored the faces")
    analyzer_model: str = Field(default="", description="The model that found and embedded the faces")
    sharpness_before: float = Field(description="Variance of the Laplacian of the original")
    sharpness_after: float
    sharpness_gain: float
    identity_min: float = Field(default=0.0, description="Lowest cosine similarity of a face before and after")
    identity_mean: float = 0.0
    face_detection_scores: list[float] = []
    stage_ms: dict[str, float] = Field(default={}, description="Milliseconds per pipeline stage")
    warnings: list[str] = Field(default=[], description='E.g. "no-face-found": the whole image was enhanced')
    duration_ms: float


RestorerName = Literal["gfpgan", "codeformer", "classical"]
ModelChoice = Literal["auto", "gfpgan", "codeformer", "classical"]
FaceIndex = Annotated[int, Field(ge=0, le=999)]


class RestorationOptionsOut(BaseModel):
    model: str = Field(
        description='The restorer family that made (or makes) it: "gfpgan", "codeformer" or '
        '"classical" ("auto" is resolved when it is asked for; "" on images from before options)'
    )
    fidelity: float | None = Field(
        default=None, description="0 (strongest restoration) to 1 (closest to the input); null: the model's default"
    )
    faces: list[int] = Field(
        default=[], description="Indexes of the faces restored (detected_faces); empty: every face"
    )
    upscale: int = Field(default=1, description="The result is this many times the original's size (1 or 2)")


class DetectedFaceOut(BaseModel):
    index: int = Field(description="What `faces` in restoration options refers to")
    box: list[int] = Field(
        description="x0, y0, x1, y1 in the original's pixels (whatever the upscale), within the original: "
        "a face cut off by an edge gets the part of it inside"
    )
    detection_score: float
    identity_similarity: float = Field(
        description="Cosine similarity of the face before and after the preferred restoration (0: not measured)"
    )


class RestorationOut(BaseModel):
    id: str = Field(description='"r1" is the upload\'s own; reprocessing adds "r2", "r3", ...')
    options: RestorationOptionsOut
    status: Literal["queued", "processing", "done", "failed"]
    created_at: datetime
    updated_at: datetime | None = None
    restorer_model: str | None = Field(default=None, description="The weights (or method) that restored it, once done")
    quality: QualityOut | None = None
    restored_url: str | None = None
    thumbnail_url: str | None = Field(default=None, description="A small picture of this version's result")
    error: str | None = None
    warnings: list[str] = []


class RestorationRequest(BaseModel):
    """Restore the stored original again, with these options (each as for an upload)."""

    model_config = ConfigDict(extra="forbid")

    model: ModelChoice = Field(default="auto", description="`auto`: the best model that can run now (GET /v1/models)")
    fidelity: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="0 (strongest restoration) to 1 (closest to the input); only for models that support it",
    )
    faces: list[FaceIndex] = Field(
        default=[], max_length=100, description="Indexes of the faces to restore (detected_faces); empty: every face"
    )
    upscale: Literal[1, 2] = Field(default=1, description="2: the result is twice the original's size")


class RestorationModelOut(BaseModel):
    name: RestorerName
    available: bool = Field(description="Whether a worker that can run it is live now (its weights are in place)")
    model_id: str | None = Field(default=None, description="The exact model the live workers run, when available")
    version: str | None = None
    sha256: str | None = Field(default=None, description="Of the weights file; null for a weight-free model")
    supports_fidelity: bool | None = None
    default_fidelity: float | None = None
    max_upscale: int | None = None


class RestorationModelList(BaseModel):
    models: list[RestorationModelOut]
    auto: RestorerName | None = Field(description="What `model=auto` picks now; null when no model can run")


class FeedbackOut(BaseModel):
    rating: int = Field(ge=1, le=5, description="1 (poor) to 5 (excellent)")
    comment: str = ""
    given_at: datetime


class ImageOut(BaseModel):
    id: str
    status: Literal["queued", "processing", "done", "failed"]
    created_at: datetime
    updated_at: datetime | None = None
    original_url: str | None = None
    thumbnail_url: str | None = None
    restored_url: str | None = None
    faces: int | None = None
    quality: QualityOut | None = None
    tags: list[str] = []
    note: str = ""
    location: str = ""
    width: int | None = None
    height: int | None = None
    error: str | None = None
    under_review: bool = Field(
        default=False, description="Hidden by an admin pending review: its pictures are withheld meanwhile"
    )
    feedback: FeedbackOut | None = Field(default=None, description="Your rating of the result, if you gave one")
    detected_faces: list[DetectedFaceOut] = Field(
        default=[], description="The faces found in the original, once a restoration has finished"
    )
    restorations: list[RestorationOut] = Field(default=[], description="Every version, oldest first")
    preferred_restoration: str | None = Field(
        default=None,
        description="The version whose result, quality and status the image shows (PATCH to choose another)",
    )
    restored_base64: str | None = Field(
        default=None,
        description="With include=restored_base64 on a restored image: the restored JPEG, base64 (RFC 4648)",
        json_schema_extra={"contentEncoding": "base64"},
    )


class AdminImageOut(ImageOut):
    user_id: str


class ImagePage(BaseModel):
    items: list[ImageOut]
    next_cursor: str | None
    counts: dict[str, int] | None = Field(
        default=None,
        description="With counts=true: your images per status among those every other filter keeps",
        examples=[{"queued": 0, "processing": 1, "done": 12, "failed": 2}],
    )


class AdminImagePage(BaseModel):
    items: list[AdminImageOut]
    next_cursor: str | None


class UserPage(BaseModel):
    items: list[UserOut]
    next_cursor: str | None


SearchTag = Annotated[str, Field(min_length=1, max_length=32)]


class SearchOptions(BaseModel):
    """What every search takes, whatever its query."""

    model_config = ConfigDict(populate_by_name=True)

    top_k: int = Field(default=10, ge=1, le=50, description="How many matches at most")
    min_score: float = Field(default=0.0, ge=0.0, le=1.0, description="Leave out matches scoring below this")
    from_: datetime | None = Field(
        default=None, alias="from", description="Only images created at or after this time (ISO 8601)"
    )
    to: datetime | None = Field(default=None, description="Only images created at or before this time (ISO 8601)")
    location: str | None = Field(default=None, max_length=100, description="Only images with this location")
    tag: list[SearchTag] = Field(default=[], max_length=10, description="Only images with any of these tags")
    scope: Literal["own", "all"] = Field(
        default="own", description="`all` searches every user's faces (admins only; recorded in the audit log)"
    )

    @field_validator("from_", "to")
    @classmethod
    def _in_utc(cls, value: datetime | None) -> datetime | None:
        """Times without an offset are UTC; every time must be one a timestamp can hold."""
        if value is None:
            return None
        try:
            return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC)
        except OverflowError:
            raise ValueError("the time is out of range") from None

    @model_validator(mode="after")
    def _from_before_to(self) -> SearchOptions:
        if self.from_ is not None and self.to is not None and self.from_ > self.to:
            raise ValueError("`from` is after `to`")
        return self


class SearchUpload(SearchOptions):
    """multipart/form-data: search with the faces of a photo (not stored)."""

    file: bytes = Field(
        description="A JPEG or PNG photo, at most 1 MB",
        json_schema_extra={"contentMediaType": "application/octet-stream"},
    )
    face: int | None = Field(
        default=None, ge=0, le=1000, description="Which of the photo's faces (query_faces index); default the largest"
    )


class SearchByFace(SearchOptions):
    """application/json: search with a face already in your history."""

    image_id: str = Field(min_length=1, max_length=64)
    face_index: int = Field(ge=0, le=1000, description="Which face of that image (0 = leftmost)")


class QueryFaceOut(BaseModel):
    index: int
    box: list[int] = Field(description="x0, y0, x1, y1 in the query photo's pixels, within it")
    detection_score: float
    used: bool = Field(description="The face the search was made with")


class FaceMatchOut(BaseModel):
    image_id: str
    face_index: int
    score: float = Field(ge=0.0, le=1.0, description="Cosine similarity mapped to 0..1: (1 + cos) / 2")
    box: list[int] = Field(description="x0, y0, x1, y1 in the image's pixels")
    created_at: datetime
    tags: list[str] = []
    location: str = ""
    thumbnail_url: str | None = None
    restored_url: str | None = None
    user_id: str | None = Field(default=None, description="The owner; given with scope=all only")


class SearchResult(BaseModel):
    query_faces: list[QueryFaceOut] = Field(description="The faces found in the query photo, or the stored face")
    matches: list[FaceMatchOut] = Field(description="Best first")
    model: str = Field(description="The face analyser model whose embeddings were compared")
