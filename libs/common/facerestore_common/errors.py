"""One error vocabulary for every service: raised in domain code, mapped once to a
gRPC status here and once to RFC 9457 problem details in the gateway."""

from __future__ import annotations

import grpc


class DomainError(Exception):
    status: grpc.StatusCode = grpc.StatusCode.INTERNAL
    # Stable, machine-readable reason; the gateway turns it into the problem `type`.
    reason: str = "internal"

    def __init__(self, detail: str, *, reason: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if reason is not None:
            self.reason = reason


class InvalidArgument(DomainError):
    status = grpc.StatusCode.INVALID_ARGUMENT
    reason = "invalid-argument"


class Unauthenticated(DomainError):
    status = grpc.StatusCode.UNAUTHENTICATED
    reason = "unauthenticated"


class PermissionDenied(DomainError):
    status = grpc.StatusCode.PERMISSION_DENIED
    reason = "forbidden"


class NotFound(DomainError):
    status = grpc.StatusCode.NOT_FOUND
    reason = "not-found"


class PayloadTooLarge(DomainError):
    status = grpc.StatusCode.OUT_OF_RANGE
    reason = "payload-too-large"


class UnsupportedMediaType(DomainError):
    status = grpc.StatusCode.INVALID_ARGUMENT
    reason = "unsupported-media-type"


class Unprocessable(DomainError):
    status = grpc.StatusCode.INVALID_ARGUMENT
    reason = "unprocessable"


class TooManyRequests(DomainError):
    status = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "rate-limited"


class Unavailable(DomainError):
    status = grpc.StatusCode.UNAVAILABLE
    reason = "unavailable"


REASON_METADATA_KEY = "x-error-reason"
