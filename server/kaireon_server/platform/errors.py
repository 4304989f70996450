"""Domain errors. One place (platform/rpc/status.py) maps them to gRPC status codes.

Domain code raises these and never imports grpc. Each error carries a stable
UPPER_SNAKE `reason` (sent as google.rpc.ErrorInfo) and, for bad input, the
offending field(s) (sent as google.rpc.BadRequest field violations). Messages
must never contain customer identifiers or personal values.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


class ErrorCode(enum.Enum):
    """The gRPC status codes the domain may ask for (names as in grpc.StatusCode)."""

    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    NOT_FOUND = "NOT_FOUND"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    ABORTED = "ABORTED"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    UNAVAILABLE = "UNAVAILABLE"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    INTERNAL = "INTERNAL"
    DATA_LOSS = "DATA_LOSS"


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


class KaireonError(Exception):
    """Base of every error the service reports on purpose."""

    code: ErrorCode = ErrorCode.INTERNAL
    default_reason: str = "INTERNAL"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
        violations: Sequence[FieldViolation] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.metadata = dict(metadata or {})
        self.violations = tuple(violations)


class InvalidArgument(KaireonError):
    code = ErrorCode.INVALID_ARGUMENT
    default_reason = "INVALID_ARGUMENT"

    @classmethod
    def field(cls, field: str, description: str, *, reason: str | None = None) -> InvalidArgument:
        return cls(
            f"{field}: {description}",
            reason=reason or "INVALID_FIELD",
            metadata={"field": field},
            violations=[FieldViolation(field, description)],
        )


class NotFound(KaireonError):
    code = ErrorCode.NOT_FOUND
    default_reason = "NOT_FOUND"


class AlreadyExists(KaireonError):
    code = ErrorCode.ALREADY_EXISTS
    default_reason = "ALREADY_EXISTS"


class PermissionDenied(KaireonError):
    code = ErrorCode.PERMISSION_DENIED
    default_reason = "PERMISSION_DENIED"


class Unauthenticated(KaireonError):
    code = ErrorCode.UNAUTHENTICATED
    default_reason = "UNAUTHENTICATED"


class FailedPrecondition(KaireonError):
    code = ErrorCode.FAILED_PRECONDITION
    default_reason = "FAILED_PRECONDITION"


class Aborted(KaireonError):
    code = ErrorCode.ABORTED
    default_reason = "ABORTED"


class ResourceExhausted(KaireonError):
    code = ErrorCode.RESOURCE_EXHAUSTED
    default_reason = "RESOURCE_EXHAUSTED"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
        violations: Sequence[FieldViolation] = (),
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, reason=reason, metadata=metadata, violations=violations)
        # Seconds after which a retry may succeed: google.rpc.RetryInfo / Retry-After.
        self.retry_after = retry_after


class Unavailable(KaireonError):
    code = ErrorCode.UNAVAILABLE
    default_reason = "UNAVAILABLE"


class DataLoss(KaireonError):
    code = ErrorCode.DATA_LOSS
    default_reason = "DATA_LOSS"


class ConfigurationError(Exception):
    """Invalid configuration: reported at start-up, before serving."""
