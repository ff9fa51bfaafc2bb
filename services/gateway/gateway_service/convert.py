"""Protobuf messages to public API bodies."""

from __future__ import annotations

from datetime import UTC

from fastapi import Request

from facerestore.auth.v1 import auth_pb2
from facerestore.history.v1 import history_pb2
from gateway_service.schemas import AdminImageOut, ImageOut, QualityOut, TokenResponse, UserOut


def tokens_out(tokens: auth_pb2.TokenPair) -> TokenResponse:
    return TokenResponse(
        access_token=tokens.access_token, refresh_token=tokens.refresh_token, expires_in=tokens.expires_in
    )


def user_out(user: auth_pb2.User) -> UserOut:
    return UserOut(
        id=user.id,
        phone=user.phone,
        role=user.role,  # type: ignore[arg-type]
        created_at=user.created_at.ToDatetime(tzinfo=UTC),
        last_login_at=user.last_login_at.ToDatetime(tzinfo=UTC),
        email=user.email or None,
        banned=user.banned,
    )


def _file_url(request: Request, token: str) -> str | None:
    return str(request.url_for("download_file", token=token)) if token else None


def image_fields(image: history_pb2.Image, request: Request) -> dict[str, object]:
    done = image.status == "done"
    return {
        "id": image.id,
        "status": image.status,
        "created_at": image.created_at.ToDatetime(tzinfo=UTC),
        "updated_at": image.updated_at.ToDatetime(tzinfo=UTC) if image.HasField("updated_at") else None,
        "original_url": _file_url(request, image.original_token),
        "thumbnail_url": _file_url(request, image.thumbnail_token),
        "restored_url": _file_url(request, image.restored_token),
        "faces": image.faces if done else None,
        "quality": QualityOut(
            backend=image.quality.backend,
            restorer_model=image.quality.restorer_model,
            analyzer_model=image.quality.analyzer_model,
            sharpness_before=image.quality.sharpness_before,
            sharpness_after=image.quality.sharpness_after,
            sharpness_gain=image.quality.sharpness_gain,
            identity_min=image.quality.identity_min,
            identity_mean=image.quality.identity_mean,
            face_detection_scores=list(image.quality.face_detection_scores),
            stage_ms=dict(image.quality.stage_ms),
            warnings=list(image.quality.warnings),
            duration_ms=image.quality.duration_ms,
        )
        if image.HasField("quality")
        else None,
        "tags": list(image.tags),
        "note": image.note,
        "location": image.location,
        "width": image.width or None,
        "height": image.height or None,
        "error": image.error or None,
    }


def image_out(image: history_pb2.Image, request: Request) -> ImageOut:
    return ImageOut(**image_fields(image, request))  # type: ignore[arg-type]


def admin_image_out(image: history_pb2.Image, request: Request) -> AdminImageOut:
    return AdminImageOut(user_id=image.user_id, **image_fields(image, request))  # type: ignore[arg-type]
