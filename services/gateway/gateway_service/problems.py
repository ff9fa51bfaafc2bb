"""RFC 9457 problem details: the one error shape clients see, with a stable `type`."""

from __future__ import annotations

import re
from typing import Any

import grpc
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from facerestore_common.errors import (
    LIMIT_METADATA_KEY,
    LIMIT_POLICY_METADATA_KEY,
    REASON_METADATA_KEY,
    RETRY_AFTER_METADATA_KEY,
    DomainError,
)
from facerestore_common.logging import get_logger, request_id_var

log = get_logger(__name__)

PROBLEM_BASE = "https://facerestore.dev/problems/"
PROBLEM_MEDIA_TYPE = "application/problem+json"

_STATUS_BY_REASON = {
    "payload-too-large": 413,
    "unsupported-media-type": 415,
    "rate-limited": 429,
}
_STATUS_BY_CODE = {
    grpc.StatusCode.INVALID_ARGUMENT: 422,
    grpc.StatusCode.OUT_OF_RANGE: 422,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 503,
}
_TITLES = {
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class Problem(Exception):
    def __init__(self, status: int, reason: str, detail: str, headers: dict[str, str] | None = None, **extra: Any):
        super().__init__(detail)
        self.status = status
        self.reason = reason
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra


def problem_response(problem: Problem, request: Request) -> JSONResponse:
    if problem.status == 429:
        # Every rate-limit refusal passes here: the gateway's own limits and auth's.
        reporter = getattr(request.app.state, "refusals", None)
        if reporter is not None:
            reporter.tally.count(str(problem.extra.get("limit") or "unknown"))
    body = {
        "type": PROBLEM_BASE + problem.reason,
        "title": _TITLES.get(problem.status, "Error"),
        "status": problem.status,
        "detail": problem.detail,
        "instance": request.url.path,
        "request_id": request_id_var.get(),
        **problem.extra,
    }
    headers = {**problem.headers}
    # Unhandled errors are answered outside the request-context middleware, which would add it.
    if body["request_id"]:
        headers.setdefault("X-Request-ID", body["request_id"])
    if problem.status == 401:
        headers.setdefault("WWW-Authenticate", "Bearer")
    return JSONResponse(body, status_code=problem.status, media_type=PROBLEM_MEDIA_TYPE, headers=headers)


_POLICY = re.compile(r"(\d+);w=(\d+)")


def _retry_headers(
    retry_after: str | int | None, limit: str | None, policy: str | None = None
) -> tuple[dict[str, str], dict[str, Any]]:
    headers: dict[str, str] = {}
    extra: dict[str, Any] = {}
    if retry_after is not None and str(retry_after).isdigit():
        headers["Retry-After"] = str(retry_after)
        extra["retry_after"] = int(retry_after)
        # The refusing limit's own numbers (a service's limit), so that the RateLimit headers
        # describe the limit that answered rather than the gateway's per-IP limit.
        if policy is not None and (numbers := _POLICY.fullmatch(str(policy))):
            headers.update(
                {
                    "RateLimit-Limit": numbers.group(1),
                    "RateLimit-Remaining": "0",
                    "RateLimit-Reset": str(retry_after),
                    "RateLimit-Policy": numbers.group(0),
                }
            )
    if limit:
        extra["limit"] = str(limit)
    return headers, extra


def from_rpc_error(error: grpc.aio.AioRpcError) -> Problem:
    code = error.code()
    metadata = dict(error.trailing_metadata() or ())
    reason = str(metadata.get(REASON_METADATA_KEY) or "")
    status = _STATUS_BY_REASON.get(reason) or _STATUS_BY_CODE.get(code, 500)
    headers, extra = _retry_headers(
        metadata.get(RETRY_AFTER_METADATA_KEY),
        metadata.get(LIMIT_METADATA_KEY),
        metadata.get(LIMIT_POLICY_METADATA_KEY),
    )
    if status >= 500:
        log.error("service_call_failed", code=code.name, details=error.details())
        if status == 503:
            return Problem(
                503, reason or "service-unavailable", "a service is unavailable; try again shortly", headers, **extra
            )
        return Problem(500, "internal", "something went wrong on our side")
    return Problem(status, reason or code.name.lower().replace("_", "-"), error.details() or "", headers, **extra)


def from_domain_error(error: DomainError) -> Problem:
    status = _STATUS_BY_REASON.get(error.reason) or _STATUS_BY_CODE.get(error.status, 500)
    headers, extra = _retry_headers(error.retry_after, error.limit, error.limit_policy)
    return Problem(status, error.reason, error.detail, headers, **extra)


def install(app: Any) -> None:
    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(exc, request)

    @app.exception_handler(DomainError)
    async def _domain(request: Request, exc: DomainError) -> JSONResponse:
        return problem_response(from_domain_error(exc), request)

    @app.exception_handler(grpc.aio.AioRpcError)
    async def _rpc(request: Request, exc: grpc.aio.AioRpcError) -> JSONResponse:
        return problem_response(from_rpc_error(exc), request)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": list(e.get("loc", [])), "msg": e.get("msg", "")} for e in exc.errors()]
        return problem_response(Problem(422, "validation-error", "the request is not valid", errors=errors), request)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:
            # A body that cannot even be parsed (JSON that is not UTF-8, broken multipart) is
            # answered like malformed JSON, with the 422 every operation with a body declares.
            errors = [{"loc": ["body"], "msg": str(exc.detail)}]
            return problem_response(
                Problem(422, "validation-error", "the request is not valid", errors=errors), request
            )
        reason = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            # RFC 9110: a 405 names every method of the resource; Starlette's names one route's.
            headers["Allow"] = _allowed_methods(request) or headers.get("Allow", "")
        return problem_response(Problem(exc.status_code, reason, str(exc.detail), headers), request)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled_error", path=request.url.path, exc_info=exc)
        return problem_response(Problem(500, "internal", "something went wrong on our side"), request)

    _document_validation_problems(app)


def _allowed_methods(request: Request) -> str:
    """The methods some route answers at this path, asked of the router itself."""
    allowed = []
    for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"):
        scope: dict[str, Any] = {**request.scope, "method": method}
        if any(route.matches(scope)[0] == Match.FULL for route in request.app.router.routes):
            allowed.append(method)
    return ", ".join(allowed)


def _document_validation_problems(app: Any) -> None:
    """FastAPI documents its own 422 body (HTTPValidationError as application/json) on every
    operation that validates input; the handler above answers with a problem instead."""
    generate = app.openapi
    fastapi_422 = {"application/json": {"schema": {"$ref": "#/components/schemas/HTTPValidationError"}}}
    problem_422 = {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/ProblemDetails"}}}

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            for operations in schema.get("paths", {}).values():
                for operation in operations.values():
                    responses = operation.get("responses", {})
                    if responses.get("422", {}).get("content") == fastapi_422:
                        responses["422"] = {"description": "The request is not valid", "content": problem_422}
            for name in ("HTTPValidationError", "ValidationError"):
                schema.get("components", {}).get("schemas", {}).pop(name, None)
        return app.openapi_schema  # type: ignore[no-any-return]

    app.openapi = openapi
