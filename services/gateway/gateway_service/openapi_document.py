"""The OpenAPI document written for client generators (openapi-python-client, openapi-typescript):
short stable operationIds, file fields as binary, binary answers declared, every error answer with
the problem details schema, and examples of requests and answers.

FastAPI writes most of the document from the routes; what it gets wrong for generators is fixed
here, in one place, after it is generated."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute, APIRouter

from gateway_service.problems import PROBLEM_BASE, PROBLEM_MEDIA_TYPE

# The client contract: a generated SDK's method names. Never rename one; add one per new route.
OPERATION_IDS: dict[tuple[str, str], str] = {
    ("GET", "/healthz"): "getHealth",
    ("GET", "/readyz"): "getReadiness",
    ("POST", "/v1/auth/otp"): "requestCode",
    ("POST", "/v1/auth/otp/verify"): "verifyCode",
    ("POST", "/v1/auth/email/otp"): "requestEmailCode",
    ("POST", "/v1/auth/email/otp/verify"): "verifyEmailCode",
    ("POST", "/v1/auth/refresh"): "refreshToken",
    ("POST", "/v1/auth/logout"): "logout",
    ("GET", "/v1/me"): "getMe",
    ("POST", "/v1/me/email"): "addEmail",
    ("POST", "/v1/me/email/verify"): "confirmEmail",
    ("GET", "/.well-known/jwks.json"): "getJwks",
    ("POST", "/v1/images"): "uploadImage",
    ("GET", "/v1/images"): "listImages",
    ("GET", "/v1/images/{image_id}"): "getImage",
    ("DELETE", "/v1/images/{image_id}"): "deleteImage",
    ("GET", "/v1/files/{token}"): "downloadFile",
    ("POST", "/v1/search"): "searchFaces",
    ("GET", "/v1/admin/users"): "adminListUsers",
    ("POST", "/v1/admin/users/{user_id}/ban"): "adminBanUser",
    ("DELETE", "/v1/admin/users/{user_id}/ban"): "adminUnbanUser",
    ("GET", "/v1/admin/images"): "adminListImages",
    ("DELETE", "/v1/admin/images/{image_id}"): "adminDeleteImage",
    ("GET", "/v1/admin/stats"): "adminGetStats",
    ("GET", "/v1/admin/users/{user_id}"): "adminGetUser",
    ("GET", "/v1/admin/audit"): "adminListAudit",
    ("GET", "/v1/admin/moderation"): "adminListModeration",
    ("POST", "/v1/admin/images/{image_id}/hide"): "adminHideImage",
    ("POST", "/v1/admin/images/{image_id}/show"): "adminShowImage",
    ("POST", "/v1/admin/moderation/{image_id}/dismiss"): "adminDismissModeration",
    ("POST", "/v1/images/{image_id}/report"): "reportImage",
    ("PATCH", "/v1/images/{image_id}"): "updateImage",
    ("POST", "/v1/images/{image_id}/feedback"): "rateImage",
    ("DELETE", "/v1/images"): "deleteAllImages",
    ("DELETE", "/v1/me"): "deleteAccount",
    ("POST", "/v1/exports"): "createExport",
    ("GET", "/v1/exports"): "listExports",
    ("GET", "/v1/exports/{export_id}"): "getExport",
    ("GET", "/v1/exports/download/{token}"): "downloadExport",
    ("GET", "/v1/models"): "listModels",
    ("POST", "/v1/images/{image_id}/restorations"): "createRestoration",
}
# FastAPI names a multipart body after its operation; generators turn that into a class name.
FORM_SCHEMA_NAMES = {"Body_uploadImage": "UploadImageForm"}
BINARY = {"type": "string", "format": "binary"}
PROBLEM_REF = {"$ref": "#/components/schemas/ProblemDetails"}
# Answers any /v1 operation may give, whatever the route: the per-IP limit, a service that is
# down, a fault of ours. Probes are not limited and call no service.
COMMON_ERRORS = {
    "429": "Too many requests from this address (requests-per-ip), or the operation's own limit",
    "500": "Something went wrong on our side",
    "503": "A service or dependency is unavailable; try again shortly",
}
_DEFAULT_REASONS = {
    401: "unauthenticated",
    403: "forbidden",
    404: "not-found",
    409: "conflict",
    413: "payload-too-large",
    415: "unsupported-media-type",
    422: "validation-error",
    429: "rate-limited",
    500: "internal",
    503: "service-unavailable",
}
_TITLES = {
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
_REASON_PREFIX = re.compile(r"^([a-z][a-z-]+):")

_IMAGE_ID = "665f1c2ab3d4e5f607182930"
_USER_ID = "665f1b9ab3d4e5f607182920"
_FILE_URL = "https://api.example.com/v1/files/eyJpIjoiNjY1ZjFjMmEiLCJrIjoidGh1bWIifQ.q8Zx"
_TOKENS = {
    "access_token": "eyJhbGciOiJSUzI1NiIsImtpZCI6IjIwMjUwNjAxIn0.eyJzdWIiOiI2NjVmMWI5YSJ9.c2lnbmF0dXJl",
    "refresh_token": "rt_Q2hhbmdlIG1lIG9uIGV2ZXJ5IHVzZQ",
    "token_type": "bearer",
    "expires_in": 900,
}
_USER = {
    "id": _USER_ID,
    "phone": "+14155550123",
    "role": "user",
    "created_at": "2025-06-01T09:30:00Z",
    "last_login_at": "2025-06-04T18:02:11Z",
    "email": "anna@example.org",
    "banned": False,
}
_OPTIONS: dict[str, Any] = {"model": "gfpgan", "fidelity": None, "faces": [], "upscale": 1}
_QUEUED_VERSION = {"id": "r1", "options": _OPTIONS, "status": "queued", "created_at": "2025-06-04T18:05:00Z"}
_QUEUED = {
    "id": _IMAGE_ID,
    "status": "queued",
    "created_at": "2025-06-04T18:05:00Z",
    "tags": ["family", "1970s"],
    "note": "Grandma at the lake",
    "location": "Lake Constance",
    "width": 640,
    "height": 480,
    "restorations": [_QUEUED_VERSION],
    "preferred_restoration": "r1",
}
_QUALITY = {
    "backend": "gfpgan",
    "restorer_model": "GFPGANv1.4",
    "analyzer_model": "buffalo_l",
    "sharpness_before": 41.5,
    "sharpness_after": 162.3,
    "sharpness_gain": 3.91,
    "identity_min": 0.87,
    "identity_mean": 0.87,
    "face_detection_scores": [0.93],
    "stage_ms": {"detect": 48.0, "restore": 1710.2, "embed": 35.1},
    "warnings": [],
    "duration_ms": 1802.4,
}
_CODEFORMER_OPTIONS = {"model": "codeformer", "fidelity": 0.7, "faces": [0], "upscale": 1}
_DONE_VERSIONS = [
    {
        **_QUEUED_VERSION,
        "status": "done",
        "updated_at": "2025-06-04T18:05:03Z",
        "restorer_model": "GFPGANv1.4",
        "quality": _QUALITY,
        "restored_url": _FILE_URL,
        "thumbnail_url": _FILE_URL,
        "warnings": [],
    },
    {
        "id": "r2",
        "options": _CODEFORMER_OPTIONS,
        "status": "done",
        "created_at": "2025-06-04T18:06:10Z",
        "updated_at": "2025-06-04T18:06:12Z",
        "restorer_model": "codeformer-v0.1.0",
        "quality": {
            **_QUALITY,
            "backend": "codeformer",
            "restorer_model": "codeformer-v0.1.0",
            "identity_min": 0.93,
            "identity_mean": 0.93,
        },
        "restored_url": _FILE_URL,
        "thumbnail_url": _FILE_URL,
        "warnings": [],
    },
]
_DONE = {
    **_QUEUED,
    "status": "done",
    "updated_at": "2025-06-04T18:05:03Z",
    "original_url": _FILE_URL,
    "thumbnail_url": _FILE_URL,
    "restored_url": _FILE_URL,
    "faces": 1,
    "quality": _QUALITY,
    "detected_faces": [{"index": 0, "box": [212, 96, 401, 330], "detection_score": 0.93, "identity_similarity": 0.87}],
    "restorations": _DONE_VERSIONS,
    "preferred_restoration": "r1",
}
_USAGE = {
    "sign_ups": 12,
    "sign_ins": 140,
    "codes_sent": 151,
    "codes_verified": 140,
    "codes_failed": 9,
    "code_send_failures": 0,
    "uploads": 310,
    "restorations_requested": 24,
    "done": 305,
    "failed": 4,
    "rate_limited": 6,
    "active_users": 88,
    "stored_bytes": 412_000_000,
    "freed_bytes": 3_100_000,
    "searches": 41,
    "reports": 2,
    "ratings": 57,
}
_USAGE_TOTALS = {**_USAGE, "rate_limited_by_limit": {"uploads-per-user": 6}}
_USAGE_SERIES = [
    {**_USAGE, "start": "2025-06-03T00:00:00Z", "rate_limited_by_limit": {}},
    {**{key: 0 for key in _USAGE}, "start": "2025-06-04T00:00:00Z", "rate_limited_by_limit": {}},
]
_DISTRIBUTION = {"count": 305, "mean": 1790.0, "p5": 1210.0, "p50": 1702.5, "p95": 2890.3}
_MODEL_STATS = {
    "model": "GFPGANv1.4",
    "images": 309,
    "done": 305,
    "failed": 4,
    "failure_rate": 0.0129,
    "failures_by_reason": {"retries_exhausted": 3, "undecodable": 1},
    "duration_ms": _DISTRIBUTION,
    "stage_ms": {"restore": {**_DISTRIBUTION, "mean": 1610.0, "p50": 1540.2}},
    "faces_per_image": {"count": 305, "mean": 1.3, "p5": 1.0, "p50": 1.0, "p95": 3.0},
    "identity_similarity": {"count": 301, "mean": 0.86, "p5": 0.71, "p50": 0.88, "p95": 0.95},
    "sharpness_gain": {"count": 305, "mean": 3.4, "p5": 1.6, "p50": 3.1, "p95": 6.2},
    "ratings": 57,
    "mean_rating": 4.2,
}
# operationId -> examples of its JSON request body and of its success answer.
REQUEST_EXAMPLES: dict[str, dict[str, Any]] = {
    "requestCode": {"phone": "+14155550123"},
    "verifyCode": {"phone": "+14155550123", "code": "123456"},
    "requestEmailCode": {"email": "anna@example.org"},
    "verifyEmailCode": {"email": "anna@example.org", "code": "123456"},
    "refreshToken": {"refresh_token": _TOKENS["refresh_token"]},
    "addEmail": {"email": "anna@example.org"},
    "confirmEmail": {"email": "anna@example.org", "code": "123456"},
    "adminBanUser": {"reason": "uploads other people's photos"},
    "adminHideImage": {"reason": "reported as someone else's face"},
    "adminShowImage": {"reason": "the owner's own photo"},
    "adminDismissModeration": {"reason": "the restoration is fine"},
    "reportImage": {"reason": "wrong-person", "note": "this is not my grandmother"},
    "updateImage": {"tags": ["family", "lake"], "note": "Grandma and me 🧑\u200d🚀", "location": None},
    "rateImage": {"rating": 5, "comment": "She looks like herself again"},
    "createRestoration": {"model": "codeformer", "fidelity": 0.7, "faces": [0], "upscale": 1},
}
RESPONSE_EXAMPLES: dict[str, Any] = {
    "requestCode": {"phone": "+14155550123", "expires_in": 300},
    "verifyCode": _TOKENS,
    "requestEmailCode": {"expires_in": 300},
    "verifyEmailCode": _TOKENS,
    "refreshToken": _TOKENS,
    "getMe": _USER,
    "addEmail": {"expires_in": 300},
    "confirmEmail": _USER,
    "uploadImage": _QUEUED,
    "listImages": {"items": [_DONE], "next_cursor": "MjAyNS0wNi0wNFQxODowNTowMFo"},
    "getImage": _DONE,
    "updateImage": {**_DONE, "tags": ["family", "lake"], "note": "Grandma and me 🧑\u200d🚀", "location": ""},
    "createRestoration": {
        "id": "r2",
        "options": _CODEFORMER_OPTIONS,
        "status": "queued",
        "created_at": "2025-06-04T18:06:10Z",
    },
    "listModels": {
        "models": [
            {
                "name": "gfpgan",
                "available": True,
                "model_id": "gfpgan-v1.4",
                "version": "1.4",
                "sha256": "e2cd4703ab14f4d01fd1383a8a8b266f9a5833dacee8e6a79d3bf21a1b6be5ad",
                "supports_fidelity": False,
                "default_fidelity": None,
                "max_upscale": 2,
            },
            {
                "name": "codeformer",
                "available": True,
                "model_id": "codeformer-v0.1.0",
                "version": "0.1.0",
                "sha256": "1009e537e0c2a07d4cabce6355f53cb66767cd4b4297ec7a4a64ca4b8a5684b7",
                "supports_fidelity": True,
                "default_fidelity": 0.5,
                "max_upscale": 2,
            },
            {"name": "classical", "available": False},
        ],
        "auto": "gfpgan",
    },
    "rateImage": {"rating": 5, "comment": "She looks like herself again", "given_at": "2025-06-04T18:07:12Z"},
    "deleteAllImages": {"deleted": 42},
    "deleteAccount": {"erasure_id": "9b1f0c4e2d8a4f6b8c7d6e5f4a3b2c1d", "status": "erasing"},
    "createExport": {
        "id": "3c9a7e2f1b0d4c8e9f6a5b4c3d2e1f0a",
        "status": "queued",
        "created_at": "2025-06-04T18:10:00Z",
        "updated_at": "2025-06-04T18:10:00Z",
        "progress": {"items_done": 0, "items_total": 0},
    },
    "getExport": {
        "id": "3c9a7e2f1b0d4c8e9f6a5b4c3d2e1f0a",
        "status": "done",
        "created_at": "2025-06-04T18:10:00Z",
        "updated_at": "2025-06-04T18:10:41Z",
        "progress": {"items_done": 312, "items_total": 312},
        "size_bytes": 98_304_221,
        "download_url": "https://api.example.com/v1/exports/download/eyJleHBfaWQiOiIzYzlhN2UyZiJ9.d2Fz",
        "download_expires_at": "2025-06-04T19:10:41Z",
        "expires_at": "2025-06-11T18:10:41Z",
    },
    "searchFaces": {
        "query_faces": [{"index": 0, "box": [112, 64, 301, 290], "detection_score": 0.91, "used": True}],
        "matches": [
            {
                "image_id": _IMAGE_ID,
                "face_index": 0,
                "score": 0.82,
                "box": [140, 80, 330, 310],
                "created_at": "2025-06-04T18:05:00Z",
                "tags": ["family"],
                "location": "Lake Constance",
                "thumbnail_url": _FILE_URL,
                "restored_url": _FILE_URL,
            }
        ],
        "model": "buffalo_l",
    },
    "adminListUsers": {"items": [_USER], "next_cursor": None},
    "adminBanUser": {**_USER, "banned": True},
    "adminUnbanUser": _USER,
    "adminListImages": {"items": [{**_DONE, "user_id": _USER_ID}], "next_cursor": None},
    "adminGetStats": {
        "users": 1250,
        "admins": 3,
        "images_total": 8412,
        "images_by_status": {"queued": 4, "processing": 2, "done": 8311, "failed": 95},
        "faces_total": 10233,
        "mean_sharpness_gain": 3.2,
        "mean_duration_ms": 1650.0,
        "moderation_actions": 17,
        "generated_at": "2025-06-04T18:10:00Z",
        "from": "2025-06-03T00:00:00Z",
        "to": "2025-06-05T00:00:00Z",
        "granularity": "day",
        "usage": {"totals": _USAGE_TOTALS, "series": _USAGE_SERIES},
        "models": {"restorers": [_MODEL_STATS], "analyzers": [{**_MODEL_STATS, "model": "buffalo_l"}]},
        "queues": [
            {
                "consumer": "inference.gfpgan",
                "queue": "facerestore.inference.gfpgan",
                "messages": 3,
                "consumers": 2,
                "retry_messages": 0,
                "dead_letter_messages": 1,
                "available": True,
            }
        ],
    },
}


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def api_router(*tags: str) -> APIRouter:
    """A router of the API's routes, naming its operations as the table says. The app takes its
    routes as its own (app.py), so an app-wide generate_unique_id_function would not reach them."""
    return APIRouter(tags=list(tags), generate_unique_id_function=operation_id)


def operation_id(route: APIRoute) -> str:
    """FastAPI's generate_unique_id_function: the id from the table, else the handler's name in camelCase."""
    for method in sorted(route.methods or ()):
        if (method, route.path_format) in OPERATION_IDS:
            return OPERATION_IDS[(method, route.path_format)]
    return _camel(route.name)


def problem_example(status: int, reason: str, path: str) -> dict[str, Any]:
    return {
        "type": PROBLEM_BASE + reason,
        "title": _TITLES.get(status, "Error"),
        "status": status,
        "detail": reason.replace("-", " "),
        "instance": path,
        "request_id": "4f9c2d1e8a7b4c3d9e0f1a2b3c4d5e6f",
    }


def _walk(node: Any, visit: Callable[[dict[str, Any]], None]) -> None:
    if isinstance(node, dict):
        visit(node)
        for value in node.values():
            _walk(value, visit)
    elif isinstance(node, list):
        for value in node:
            _walk(value, visit)


def _binary_strings(node: dict[str, Any]) -> None:
    # OpenAPI 3.1 (pydantic 2) says contentMediaType; generators read `format: binary` as a file.
    if node.get("type") == "string" and node.pop("contentMediaType", None) is not None:
        node["format"] = "binary"


def _rename_forms(document: dict[str, Any]) -> None:
    schemas = document.get("components", {}).get("schemas", {})
    renames = {old: new for old, new in FORM_SCHEMA_NAMES.items() if old in schemas}
    for old, new in renames.items():
        schemas[new] = {**schemas.pop(old), "title": new}

    def retarget(node: dict[str, Any]) -> None:
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.rpartition("/")[2] in renames:
            node["$ref"] = "#/components/schemas/" + renames[ref.rpartition("/")[2]]

    _walk(document, retarget)


def _error_answers(path: str, operation: dict[str, Any]) -> None:
    responses = operation.setdefault("responses", {})
    if path.startswith("/v1/"):
        for status, description in COMMON_ERRORS.items():
            responses.setdefault(status, {"description": description})
    for status, response in responses.items():
        if not status.isdigit() or int(status) < 400:
            continue
        code = int(status)
        match = _REASON_PREFIX.match(response.get("description", ""))
        reason = match.group(1) if match else _DEFAULT_REASONS.get(code, "error")
        # One media type, the one the gateway answers with, and its schema.
        response["content"] = {
            PROBLEM_MEDIA_TYPE: {"schema": PROBLEM_REF, "example": problem_example(code, reason, path)}
        }
        if code == 429:
            response.setdefault("headers", {}).setdefault(
                "Retry-After", {"description": "Seconds until a retry can succeed", "schema": {"type": "integer"}}
            )


def _binary_answers(operation: dict[str, Any]) -> None:
    for status, response in operation.get("responses", {}).items():
        if not status.startswith("2"):
            continue
        for media_type, content in response.get("content", {}).items():
            binary = media_type.startswith("image/") or media_type in ("application/zip", "application/octet-stream")
            if binary and "schema" not in content:
                content["schema"] = dict(BINARY)


def _examples(operation: dict[str, Any]) -> None:
    name = operation.get("operationId", "")
    body = operation.get("requestBody", {}).get("content", {}).get("application/json")
    if body is not None and name in REQUEST_EXAMPLES:
        body.setdefault("example", REQUEST_EXAMPLES[name])
    for status, response in operation.get("responses", {}).items():
        json_answer = response.get("content", {}).get("application/json")
        if status.startswith("2") and json_answer is not None and name in RESPONSE_EXAMPLES:
            json_answer.setdefault("example", RESPONSE_EXAMPLES[name])


def fix_document(document: dict[str, Any]) -> dict[str, Any]:
    """Applies every fix in place; applying it twice changes nothing."""
    _walk(document.get("components", {}), _binary_strings)
    _rename_forms(document)
    for path, operations in document.get("paths", {}).items():
        for operation in operations.values():
            _error_answers(path, operation)
            _binary_answers(operation)
            _examples(operation)
    return document


def install(app: FastAPI) -> None:
    """Wraps app.openapi() (after every other wrapper) so that the served document is fixed."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        return fix_document(generate())

    app.openapi = openapi  # type: ignore[method-assign]


def main(argv: list[str]) -> None:
    """`python -m gateway_service.openapi_document OUT.json`: the document the gateway serves,
    without starting it (generators and the web build read it)."""
    import json
    import sys
    from pathlib import Path

    from gateway_service.app import create_app
    from gateway_service.settings import Settings

    if len(argv) != 1:
        sys.exit("usage: python -m gateway_service.openapi_document OUT.json")
    document = create_app(Settings(webapp_dir="")).openapi()
    out = Path(argv[0])
    out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    # Unchanged content keeps its mtime, so that make does not rebuild what depends on it.
    if not out.exists() or out.read_text() != text:
        out.write_text(text)


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
