"""One error vocabulary for every service: raised in domain code, mapped once to a
gRPC status here and once to RFC 9457 problem details in the gateway."""

from __future__ import annotations

import grpc

REASON_METADATA_KEY = "x-error-reason"
RETRY_AFTER_METADATA_KEY = "x-retry-after"
LIMIT_METADATA_KEY = "x-limit"
# The refusing limit's numbers as an IETF RateLimit-Policy item ("5;w=3600"), for the RateLimit headers.
LIMIT_POLICY_METADATA_KEY = "x-limit-policy"


class DomainError(Exception):
    status: grpc.StatusCode = grpc.StatusCode.INTERNAL
    # Stable, machine-readable reason; the gateway turns it into the problem `type`.
    reason: str = "internal"

    def __init__(
        self,
        detail: str,
        *,
        reason: str | None = None,
        retry_after: int | None = None,
        limit: str | None = None,
        limit_policy: str | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        if reason is not None:
            self.reason = reason
        # For refusals that pass with time: seconds until a retry can succeed, and which limit.
        self.retry_after = retry_after
        self.limit = limit
        self.limit_policy = limit_policy

    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
        metadata = [(REASON_METADATA_KEY, self.reason)]
        if self.retry_after is not None:
            metadata.append((RETRY_AFTER_METADATA_KEY, str(self.retry_after)))
        if self.limit is not None:
            metadata.append((LIMIT_METADATA_KEY, self.limit))
        if self.limit_policy is not None:
            metadata.append((LIMIT_POLICY_METADATA_KEY, self.limit_policy))
        return tuple(metadata)


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


class Conflict(DomainError):
    status = grpc.StatusCode.ALREADY_EXISTS
    reason = "conflict"


class Unavailable(DomainError):
    status = grpc.StatusCode.UNAVAILABLE
    reason = "unavailable"
