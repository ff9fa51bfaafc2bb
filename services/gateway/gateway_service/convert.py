"""Protobuf messages to public API bodies."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi import Request, Response
from google.protobuf import timestamp_pb2
from pydantic_core import to_json

from facerestore.auth.v1 import auth_pb2
from facerestore.events.v1 import events_pb2
from facerestore.history.v1 import history_pb2
from gateway_service.schemas import (
    AdminImageOut,
    FaceMatchOut,
    ImageOut,
    QueryFaceOut,
    SearchResult,
    TokenResponse,
    UserOut,
)


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
    # From the configured public address, never from the request's Host header (which the
    # client chooses). Tokens are URL-safe (JWS compact form).
    if not token:
        return None
    base: str = request.app.state.settings.public_base_url
    return f"{base}/v1/files/{token}"


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _datetime(stamp: timestamp_pb2.Timestamp) -> datetime:
    # Timestamp.ToDatetime validates and rounds through several calls; this is the same value.
    # (days, seconds, microseconds) by position: keywords cost a third more, four times per image.
    return _EPOCH + timedelta(0, stamp.seconds, stamp.nanos // 1000)


def _quality(quality: history_pb2.Quality) -> dict[str, object]:
    return {
        "backend": quality.backend,
        "restorer_model": quality.restorer_model,
        "analyzer_model": quality.analyzer_model,
        "sharpness_before": quality.sharpness_before,
        "sharpness_after": quality.sharpness_after,
        "sharpness_gain": quality.sharpness_gain,
        "identity_min": quality.identity_min,
        "identity_mean": quality.identity_mean,
        "face_detection_scores": list(quality.face_detection_scores),
        "stage_ms": dict(quality.stage_ms),
        "warnings": list(quality.warnings),
        "duration_ms": quality.duration_ms,
    }


def model_json(fields: dict[str, object]) -> Response:
    """A 200 whose body is `fields` as JSON: plain values built in the order of the route's
    response_model, with every field of it, serialised by pydantic-core as that model would be
    (non-finite floats as null, datetimes in ISO 8601), without a model in between. The route
    still declares the model (the OpenAPI document is unchanged); tests hold the bytes equal."""
    return Response(to_json(fields, inf_nan_mode="null"), media_type="application/json")


def image_fields(image: history_pb2.Image, request: Request) -> dict[str, object]:
    """An image's public fields as plain values, each of ImageOut's, in its order."""
    base: str = request.app.state.settings.public_base_url
    original, thumbnail, restored = image.original_token, image.thumbnail_token, image.restored_token
    return {
        "id": image.id,
        "status": image.status,
        "created_at": _datetime(image.created_at),
        "updated_at": _datetime(image.updated_at) if image.HasField("updated_at") else None,
        # From the configured public address, never from the request's Host header.
        "original_url": f"{base}/v1/files/{original}" if original else None,
        "thumbnail_url": f"{base}/v1/files/{thumbnail}" if thumbnail else None,
        "restored_url": f"{base}/v1/files/{restored}" if restored else None,
        "faces": image.faces if image.status == "done" else None,
        "quality": _quality(image.quality) if image.HasField("quality") else None,
        "tags": list(image.tags),
        "note": image.note,
        "location": image.location,
        "width": image.width or None,
        "height": image.height or None,
        "error": image.error or None,
        "under_review": image.under_review,
        "feedback": feedback_fields(image.feedback) if image.HasField("feedback") else None,
        "detected_faces": [
            {
                "index": face.index,
                "box": list(face.box),
                "detection_score": face.detection_score,
                "identity_similarity": face.identity_similarity,
            }
            for face in image.detected_faces
        ],
        "restorations": [restoration_fields(restoration, base) for restoration in image.restorations],
        "preferred_restoration": image.preferred_restoration or None,
        "restored_base64": None,
    }


def options_fields(options: events_pb2.RestorationOptions) -> dict[str, object]:
    return {
        "model": options.model,
        "fidelity": options.fidelity if options.HasField("fidelity") else None,
        "faces": list(options.faces),
        "upscale": options.upscale or 1,
    }


def restoration_fields(restoration: history_pb2.Restoration, base: str) -> dict[str, object]:
    """A version's public fields; links from the configured public address."""
    quality = restoration.quality if restoration.HasField("quality") else None
    thumbnail, restored = restoration.thumbnail_token, restoration.restored_token
    return {
        "id": restoration.id,
        "options": options_fields(restoration.options),
        "status": restoration.status,
        "created_at": _datetime(restoration.created_at),
        "updated_at": _datetime(restoration.updated_at) if restoration.HasField("updated_at") else None,
        "restorer_model": quality.restorer_model or None if quality is not None else None,
        "quality": _quality(quality) if quality is not None else None,
        "restored_url": f"{base}/v1/files/{restored}" if restored else None,
        "thumbnail_url": f"{base}/v1/files/{thumbnail}" if thumbnail else None,
        "error": restoration.error or None,
        "warnings": list(quality.warnings) if quality is not None else [],
    }


def feedback_fields(feedback: history_pb2.Feedback) -> dict[str, object]:
    return {"rating": feedback.rating, "comment": feedback.comment, "given_at": _datetime(feedback.given_at)}


def image_out(image: history_pb2.Image, request: Request) -> ImageOut:
    return ImageOut(**image_fields(image, request))  # type: ignore[arg-type]


def admin_image_out(image: history_pb2.Image, request: Request) -> AdminImageOut:
    return AdminImageOut(user_id=image.user_id, **image_fields(image, request))  # type: ignore[arg-type]


def search_result_out(result: history_pb2.SearchFacesResponse, request: Request, with_owner: bool) -> SearchResult:
    return SearchResult(
        query_faces=[
            QueryFaceOut(index=face.index, box=list(face.box), detection_score=face.detection_score, used=face.used)
            for face in result.query_faces
        ],
        matches=[
            FaceMatchOut(
                image_id=match.image_id,
                face_index=match.face_index,
                score=min(1.0, max(0.0, match.score)),
                box=list(match.box),
                created_at=match.created_at.ToDatetime(tzinfo=UTC),
                tags=list(match.tags),
                location=match.location,
                thumbnail_url=_file_url(request, match.thumbnail_token),
                restored_url=_file_url(request, match.restored_token),
                user_id=match.user_id if with_owner else None,
            )
            for match in result.matches
        ],
        model=result.model,
    )
