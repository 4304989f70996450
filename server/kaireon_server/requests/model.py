"""States, transitions and domain types of data-subject requests (no SQL, no gRPC)."""

from __future__ import annotations

import enum
import re
import uuid
from dataclasses import dataclass
from datetime import date, datetime

from kaireon_server.erasure.model import MAX_REASON_CHARS, validate_customer_id
from kaireon_server.platform.errors import FailedPrecondition, InvalidArgument, NotFound

KINDS = ("access", "erasure")
ENTITY_TYPE = "subject_request"


class State(enum.StrEnum):
    RECEIVED = "received"
    IDENTITY_VERIFICATION = "identity_verification"
    AWAITING_APPROVAL = "awaiting_approval"
    IN_PROGRESS = "in_progress"
    REQUIRES_INPUT = "requires_input"
    PAUSED = "paused"
    COMPLETED = "completed"
    DENIED = "denied"
    CANCELLED = "cancelled"


# The clock runs in these states (the "due before" and "overdue" lists).
RUNNING = frozenset(
    {State.RECEIVED, State.IDENTITY_VERIFICATION, State.AWAITING_APPROVAL, State.IN_PROGRESS}
)
STOPPED = frozenset({State.REQUIRES_INPUT, State.PAUSED})
TERMINAL = frozenset({State.COMPLETED, State.DENIED, State.CANCELLED})
BEFORE_EXECUTION = frozenset({State.RECEIVED, State.IDENTITY_VERIFICATION, State.AWAITING_APPROVAL})


class Verb(enum.StrEnum):
    """Every audited transition; the audit action is `subject_request_<verb>`."""

    RECEIVED = "received"
    VERIFICATION_PENDING = "verification_pending"
    VERIFIED = "verified"
    VERIFICATION_FAILED = "verification_failed"
    APPROVED = "approved"
    DENIED = "denied"
    EXTENDED = "extended"
    PAUSED = "paused"
    RESUMED = "resumed"
    CANCELLED = "cancelled"
    # Settled: every processor acknowledged the erasure or was waived.
    COMPLETED = "completed"

    @property
    def action(self) -> str:
        return f"subject_request_{self.value}"


# Verb -> the states it may start from. Approve also checks the policy's
# verification flag; resume goes back to the state the request was paused in.
ALLOWED_FROM: dict[Verb, frozenset[State]] = {
    Verb.VERIFICATION_PENDING: frozenset({State.RECEIVED}),
    Verb.VERIFIED: frozenset({State.RECEIVED, State.IDENTITY_VERIFICATION}),
    Verb.VERIFICATION_FAILED: frozenset({State.RECEIVED, State.IDENTITY_VERIFICATION}),
    Verb.APPROVED: BEFORE_EXECUTION,
    Verb.DENIED: BEFORE_EXECUTION | STOPPED,
    Verb.EXTENDED: RUNNING | STOPPED,
    Verb.PAUSED: BEFORE_EXECUTION,
    Verb.RESUMED: STOPPED,
    Verb.CANCELLED: BEFORE_EXECUTION | STOPPED,
    # Not an RPC: the settlement of the last processor event (migration 0153).
    Verb.COMPLETED: frozenset({State.IN_PROGRESS}),
}


def check_transition(verb: Verb, state: State) -> None:
    if state not in ALLOWED_FROM[verb]:
        allowed = ", ".join(sorted(ALLOWED_FROM[verb]))
        raise FailedPrecondition(
            f"cannot apply {verb.value} to a request in state {state.value} "
            f"(allowed from: {allowed})",
            reason="ILLEGAL_TRANSITION",
            metadata={"state": state.value, "transition": verb.value},
        )


@dataclass(frozen=True)
class SubjectRequest:
    tenant_id: str
    id: uuid.UUID
    kind: str
    subject_id: str
    regulation: str
    state: State
    origin: str
    received_at: datetime
    due_date: date
    extension_months: int
    extension_days: int
    paused_days: int
    paused_at: datetime | None
    paused_from: State | None
    verification_method: str | None
    verification_reference: str | None
    dsar_request_id: uuid.UUID | None
    created_by: str
    updated_at: datetime

    def current_due(self, today: date) -> date:
        """The due date as of `today`: while the clock is stopped it moves with the days."""
        if self.paused_at is None:
            return self.due_date
        return self.due_date + (today - self.paused_at.date())

    def days_left(self, today: date) -> int:
        return (self.current_due(today) - today).days

    def overdue(self, today: date) -> bool:
        return self.state in RUNNING and today > self.due_date


def not_found() -> NotFound:
    return NotFound("no such request", reason="SUBJECT_REQUEST_NOT_FOUND")


# The one spelling the service hands out: uuid.UUID alone would also take
# "{...}", "urn:uuid:..." and undashed forms, i.e. several names for one row.
_UUID = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")


def parse_uuid(value: str, field_name: str) -> uuid.UUID:
    if not value:
        raise InvalidArgument.field(field_name, "is required")
    if not _UUID.fullmatch(value):
        raise InvalidArgument.field(field_name, "must be a UUID")
    return uuid.UUID(value)


def parse_request_id(value: str) -> uuid.UUID:
    return parse_uuid(value, "id")


def validate_kind(value: str) -> str:
    if value not in KINDS:
        raise InvalidArgument.field("kind", f"unknown kind; supported: {', '.join(KINDS)}")
    return value


def validate_subject(value: str) -> str:
    return validate_customer_id(value, "subject_id")


def validate_state(value: str) -> State:
    try:
        return State(value)
    except ValueError:
        names = ", ".join(s.value for s in State)
        raise InvalidArgument.field("state", f"unknown state; one of: {names}") from None


def validate_text(value: str, field_name: str, *, required: bool) -> str:
    """A reason, method or reference: free text kept in the audit row's personal part."""
    if not value.strip():
        if required:
            raise InvalidArgument.field(field_name, "is required")
        return ""
    if len(value) > MAX_REASON_CHARS:
        raise InvalidArgument.field(field_name, f"must be at most {MAX_REASON_CHARS} characters")
    return value
