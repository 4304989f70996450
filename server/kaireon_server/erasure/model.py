"""Domain types and input rules of erasure and legal holds (no SQL, no gRPC)."""

from __future__ import annotations

import enum
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from kaireon_server.platform.env import EnvReader
from kaireon_server.platform.errors import (
    ErrorCode,
    InvalidArgument,
    KaireonError,
)

MAX_CUSTOMER_ID_CHARS = 256
MAX_REASON_CHARS = 500
DEFAULT_TIMEOUT_MS = 60_000
TIMEOUT_ENV = "KAIREON_ERASURE_TIMEOUT_MS"

# Audit actions written by this capability.
ACTION_ERASURE = "gdpr_erasure"
ACTION_PREVIEW = "gdpr_erasure_preview"
ACTION_HOLD_SET = "legal_hold_set"
ACTION_HOLD_RELEASED = "legal_hold_released"
ENTITY_TYPE = "customer"


class ErasureTimedOut(KaireonError):
    """The erasure's time budget ran out between statements (nothing was committed)."""

    code = ErrorCode.DEADLINE_EXCEEDED
    default_reason = "ERASURE_TIMEOUT"


def _has_control(text: str) -> bool:
    # Control and format characters (NUL, newlines, bidi overrides) make an id
    # ambiguous in logs and UIs; PostgreSQL text cannot even store NUL.
    return any(unicodedata.category(ch) in {"Cc", "Cf"} for ch in text)


def validate_customer_id(value: str, field_name: str = "customer_id") -> str:
    """The customer id exactly as given, or INVALID_ARGUMENT.

    Messages never echo the value: it is personal data."""
    if not value:
        raise InvalidArgument.field(field_name, "is required and must be a non-empty string")
    if len(value) > MAX_CUSTOMER_ID_CHARS:
        raise InvalidArgument.field(
            field_name, f"must be at most {MAX_CUSTOMER_ID_CHARS} characters"
        )
    if not value.strip():
        raise InvalidArgument.field(field_name, "must not be blank")
    if _has_control(value):
        raise InvalidArgument.field(field_name, "must not contain control characters")
    return value


def validate_reason(value: str) -> str:
    if not value.strip():
        raise InvalidArgument.field("reason", "is required: give a case reference")
    if len(value) > MAX_REASON_CHARS:
        raise InvalidArgument.field("reason", f"must be at most {MAX_REASON_CHARS} characters")
    if _has_control(value):
        raise InvalidArgument.field("reason", "must not contain control characters")
    return value


def timeout_from_env(env: Mapping[str, str]) -> float:
    """Seconds one erasure transaction may take (KAIREON_ERASURE_TIMEOUT_MS)."""
    return EnvReader(env).integer(TIMEOUT_ENV, DEFAULT_TIMEOUT_MS, minimum=1) / 1000


@dataclass(frozen=True)
class LegalHold:
    customer_id: str
    reason: str
    created_by: str
    created_at: datetime


class Retention(enum.Enum):
    KEPT = "kept"
    REDACTED = "redacted"


@dataclass(frozen=True)
class RetainedTable:
    table: str
    legal_basis: str
    row_count: int
    retention: Retention


@dataclass(frozen=True)
class Receipt:
    canonical_payload: str
    digest_sha256: str
    signature: str
    key_id: str


@dataclass(frozen=True)
class NotifiedRecipient:
    """A processor the erasure was passed on to (its event queued in the
    erasure's transaction); listed in the signed receipt."""

    processor_id: str
    name: str
    event_id: str


@dataclass(frozen=True)
class ErasureOutcome:
    customer_id: str
    dry_run: bool
    # Every key of data_map.count_keys(), in that order.
    deleted_counts: Mapping[str, int]
    skipped_tables: tuple[str, ...]
    retained: tuple[RetainedTable, ...]
    legal_hold: LegalHold | None = None
    receipt: Receipt | None = None
    audit_event_id: str = ""

    @property
    def total_deleted(self) -> int:
        return sum(self.deleted_counts.values())
