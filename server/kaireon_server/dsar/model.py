"""DSAR domain types and input validation (no gRPC, no SQL)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kaireon_server.platform.audit_chain import AuditRow
from kaireon_server.platform.errors import InvalidArgument, NotFound
from kaireon_server.platform.observability.tracing import TraceCarrier

PENDING = "pending"
PROCESSING = "processing"
COMPLETED = "completed"
FAILED = "failed"
STATUSES = (PENDING, PROCESSING, COMPLETED, FAILED)
TERMINAL = frozenset({COMPLETED, FAILED})
REQUEST_TYPES = ("export",)
MAX_SUBJECT_LENGTH = 256
MAX_IDEMPOTENCY_KEY_LENGTH = 128


def audit_row(
    action: str, request_id: object, subject_id: str, actor: str, changes: Mapping[str, Any]
) -> AuditRow:
    """An audit row about a request: the subject is personal data (redacted by an
    erasure), never part of `changes`."""
    return AuditRow(
        action=action,
        entity_type="dsar_request",
        entity_id=str(request_id),
        actor=actor,
        changes=changes,
        personal={"subjectId": subject_id},
        subject_id=subject_id,
    )


@dataclass(frozen=True)
class CreateCommand:
    request_type: str
    subject_id: str
    encrypt: bool
    idempotency_key: str | None


def validate_create(
    request_type: str, subject_id: str, encrypt: bool, idempotency_key: str
) -> CreateCommand:
    """Messages name the rule broken, never the value (it may be personal data)."""
    if not request_type:
        raise InvalidArgument.field("request_type", "required; supported: export")
    if request_type not in REQUEST_TYPES:
        raise InvalidArgument.field(
            "request_type", "unknown request type; supported: export", reason="UNKNOWN_REQUEST_TYPE"
        )
    if not subject_id.strip():
        raise InvalidArgument.field("subject_id", "required")
    if len(subject_id) > MAX_SUBJECT_LENGTH:
        raise InvalidArgument.field(
            "subject_id", f"at most {MAX_SUBJECT_LENGTH} characters", reason="FIELD_TOO_LONG"
        )
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in subject_id):
        raise InvalidArgument.field("subject_id", "must not contain control characters")
    if len(idempotency_key) > MAX_IDEMPOTENCY_KEY_LENGTH:
        raise InvalidArgument.field(
            "idempotency_key",
            f"at most {MAX_IDEMPOTENCY_KEY_LENGTH} characters",
            reason="FIELD_TOO_LONG",
        )
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in idempotency_key):
        raise InvalidArgument.field("idempotency_key", "must not contain control characters")
    return CreateCommand(request_type, subject_id, encrypt, idempotency_key or None)


# The one spelling the service hands out: uuid.UUID alone would also take
# "{...}", "urn:uuid:..." and undashed forms, i.e. several names for one request.
_REQUEST_ID = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")


def parse_request_id(value: str) -> uuid.UUID:
    """A request id; anything that is not one cannot exist, so it is simply not found."""
    if not value:
        raise InvalidArgument.field("id", "required")
    if not _REQUEST_ID.fullmatch(value):
        raise NotFound("no such DSAR request", reason="DSAR_REQUEST_NOT_FOUND")
    return uuid.UUID(value)


def validate_status(value: str) -> str | None:
    if not value:
        return None
    if value not in STATUSES:
        raise InvalidArgument.field(
            "status", "unknown status; one of pending, processing, completed, failed"
        )
    return value


@dataclass(frozen=True)
class DsarRecord:
    """One dsar_request row, as the API shows it."""

    tenant_id: str
    id: uuid.UUID
    request_type: str
    subject_id: str
    status: str
    encrypt: bool
    progress: int
    error: str | None
    idempotency_key: str | None
    attempts: int
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None
    version: int
    export_attempt: int | None
    export_chunks: int | None
    export_size: int | None
    export_digest: str | None
    export_signature: str | None
    export_signing_key_id: str | None
    export_key_version: str | None
    export_available: bool

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> DsarRecord:
        return cls(
            tenant_id=row["tenant_id"],
            id=row["id"],
            request_type=row["request_type"],
            subject_id=row["subject_id"],
            status=row["status"],
            encrypt=row["encrypt"],
            progress=row["progress"],
            error=row["error"],
            idempotency_key=row["idempotency_key"],
            attempts=row["attempts"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            completed_at=row["completed_at"],
            version=row["version"],
            export_attempt=row["export_attempt"],
            export_chunks=row["export_chunks"],
            export_size=row["export_size"],
            export_digest=row["export_digest"],
            export_signature=row["export_signature"],
            export_signing_key_id=row["export_signing_key_id"],
            export_key_version=row["export_key_version"],
            export_available=bool(row["export_available"]),
        )

    def at_event(self, event: Mapping[str, Any]) -> DsarRecord:
        """This request as it was at one recorded state (watch replay)."""
        fields = dict(self.__dict__)
        fields.update(
            status=event["status"],
            progress=event["progress"],
            error=event["error"],
            version=event["version"],
            updated_at=event["created_at"],
        )
        if event["status"] != COMPLETED:
            fields.update(completed_at=None, export_available=False)
        return DsarRecord(**fields)


@dataclass(frozen=True)
class Claim:
    """A job a worker owns: the request and the attempt number its lease is for."""

    tenant_id: str
    request_id: uuid.UUID
    subject_id: str
    encrypt: bool
    attempt: int
    # The trace of the call that queued the request (None: tracing was off then),
    # and how long ago that was: the job's span joins or links that trace.
    origin: TraceCarrier | None = None
    queued_seconds: float = 0.0


@dataclass(frozen=True)
class LifecycleEntry:
    """The lifecycle row a create also writes, in its one statement (migration
    0239): an in-progress request of `regulation`, received at `received_at`,
    due by the tenant's policy for it or else these default periods.
    requests/intake.py builds it; the lifecycle owns what it says."""

    regulation: str
    state: str
    received_at: datetime
    default_months: int
    default_days: int
