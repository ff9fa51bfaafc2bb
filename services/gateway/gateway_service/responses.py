"""Error responses as the OpenAPI document describes them, shared by every route."""

from __future__ import annotations

from typing import Any

from gateway_service.schemas import ProblemDetails

Responses = dict[int | str, dict[str, Any]]


def problem(description: str) -> dict[str, Any]:
    return {"model": ProblemDetails, "description": description, "content": {"application/problem+json": {}}}


def rate_limited(description: str) -> dict[str, Any]:
    return {
        **problem(description),
        "headers": {
            "Retry-After": {"description": "Seconds until a retry can succeed", "schema": {"type": "integer"}},
        },
    }


UNAUTHORIZED = problem("No token, or an invalid, expired or revoked one")
FORBIDDEN = problem("The token's role does not allow this")
NOT_FOUND = problem("Unknown, deleted, or someone else's")
INVALID = problem("The request is not valid")
UNAVAILABLE = problem("A service or dependency is unavailable; try again shortly")
