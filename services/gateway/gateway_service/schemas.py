"""The public API's request and response bodies (the contract client apps build against)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field


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


class AdminImageOut(ImageOut):
    user_id: str


class ImagePage(BaseModel):
    items: list[ImageOut]
    next_cursor: str | None


class AdminImagePage(BaseModel):
    items: list[AdminImageOut]
    next_cursor: str | None


class UserPage(BaseModel):
    items: list[UserOut]
    next_cursor: str | None


class StatsOut(BaseModel):
    users: int
    admins: int
    images_total: int
    images_by_status: dict[str, int]
    faces_total: int
    mean_sharpness_gain: float
    mean_duration_ms: float
    moderation_actions: int
    generated_at: datetime
