"""The data map: every table holding personal data, what erasure does to it, what DSAR exports.

One list, read by ErasureService (what to delete, retain or redact, and in which
order) and by DsarService (what to export, under which key). A test scans the
live schema and fails when a table with a `customer_id` or `subject_id` column
is missing here, or is neither erased nor retained with a stated legal basis.

Dynamic per-tenant tables (`ds_*`, registered in schema_registry) are handled
as one category: DYNAMIC_SCHEMA_ROWS.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class ErasureAction(enum.Enum):
    DELETE = "delete"  # rows of the subject are deleted
    RETAIN = "retain"  # rows are kept under `legal_basis`
    REDACT = "redact"  # rows are kept, personal values removed (hashes stay valid)


@dataclass(frozen=True)
class TableEntry:
    table: str
    # Column naming the data subject.
    subject_column: str
    erasure: ErasureAction
    # Key in EraseCustomerResponse.deletedCounts (DELETE only).
    count_key: str | None
    # Key in the DSAR export's `data` object; None = not exported (with reason).
    export_key: str | None
    # Why rows are kept (RETAIN / REDACT), or why a table is not exported.
    legal_basis: str | None = None
    export_note: str | None = None


# Deletion order is this order (the platform's order, then the additions); a
# fixed order means concurrent erasures lock tables alike and never deadlock.
TABLES: tuple[TableEntry, ...] = (
    TableEntry(
        "interaction_history",
        "customer_id",
        ErasureAction.DELETE,
        "interactionHistory",
        "interactions",
    ),
    TableEntry(
        "interaction_summary",
        "customer_id",
        ErasureAction.DELETE,
        "interactionSummary",
        "summaries",
    ),
    TableEntry("suppression", "customer_id", ErasureAction.DELETE, "suppression", "suppressions"),
    TableEntry(
        "decision_trace", "customer_id", ErasureAction.DELETE, "decisionTrace", "decisionTraces"
    ),
    TableEntry(
        "attribution_result",
        "customer_id",
        ErasureAction.DELETE,
        "attributionResult",
        "attributionResults",
    ),
    TableEntry(
        "variant_assignment",
        "customer_id",
        ErasureAction.DELETE,
        "variantAssignment",
        "variantAssignments",
    ),
    TableEntry(
        "identity_link", "customer_id", ErasureAction.DELETE, "identityLink", "identityLinks"
    ),
    TableEntry(
        "journey_enrollment",
        "customer_id",
        ErasureAction.DELETE,
        "journeyEnrollment",
        "journeyEnrollments",
    ),
    TableEntry("delivery", "customer_id", ErasureAction.DELETE, "delivery", "deliveries"),
    TableEntry(
        "consent_record",
        "customer_id",
        ErasureAction.RETAIN,
        None,
        "consentRecords",
        legal_basis=(
            "GDPR Art. 7(1) and Art. 17(3)(e): the controller must be able to demonstrate "
            "consent and defend legal claims"
        ),
    ),
    TableEntry(
        "audit_log",
        "subject_id",
        ErasureAction.REDACT,
        None,
        "auditLogs",
        legal_basis=(
            "GDPR Art. 5(2) and Art. 17(3)(b): accountability records are kept; personal "
            "values are redacted, their salted digests keep the chain verifiable"
        ),
    ),
    # Owned by DsarService (migration 0020+).
    TableEntry(
        "dsar_request",
        "subject_id",
        ErasureAction.RETAIN,
        None,
        "dsarRequests",
        legal_basis=(
            "GDPR Art. 5(2) and Art. 12: proof that data-subject requests were received and "
            "answered; the stored export payloads are deleted (dsarExport)"
        ),
    ),
    TableEntry(
        "dsar_export_chunk",
        "subject_id",
        ErasureAction.DELETE,
        "dsarExport",
        None,
        export_note="the stored export documents themselves",
    ),
    # Owned by RequestService (migration 0150+).
    TableEntry(
        "subject_request",
        "subject_id",
        ErasureAction.RETAIN,
        None,
        None,
        legal_basis=(
            "GDPR Art. 5(2) and Art. 12: proof that data-subject requests were received, "
            "handled within their deadline and answered"
        ),
        export_note="the lifecycle record of the requests; their exports are dsarRequests",
    ),
    TableEntry(
        "processor_outbox",
        "subject_id",
        ErasureAction.RETAIN,
        None,
        None,
        legal_basis=(
            "GDPR Art. 19: the erasure must be communicated to each recipient; the event is "
            "kept as proof of the notification"
        ),
        export_note="notifications of the subject's erasure to processors",
    ),
    # Owned by ErasureService (migration 0030+).
    TableEntry(
        "legal_hold",
        "customer_id",
        ErasureAction.RETAIN,
        None,
        None,
        legal_basis=(
            "GDPR Art. 17(3)(e): data kept for the establishment or defence of legal claims; "
            "erasure is refused while a hold exists"
        ),
        export_note="withheld: disclosing a hold could prejudice the legal claim (Art. 23(1)(j))",
    ),
)

# Tables with a subject column whose rows never outlive the transaction that
# writes them: no erasure, export or retention applies to them (why, per table).
TRANSIENT: dict[str, str] = {
    "audit_pending": (
        "audit rows waiting for their transaction's COMMIT, which chains them into "
        "audit_log and deletes them (migration 0234)"
    ),
}

# Key of the dynamic-schema category (ds_* tables) in counts and exports.
DYNAMIC_SCHEMA_COUNT_KEY = "dynamicSchemaRows"
DYNAMIC_SCHEMA_EXPORT_KEY = "dynamicSchemaRows"
DYNAMIC_SCHEMA_SUBJECT_COLUMN = "customer_id"

# The nine keys of the platform's REST contract, always present in deletedCounts.
SEED_COUNT_KEYS: tuple[str, ...] = (
    "interactionHistory",
    "interactionSummary",
    "suppression",
    "decisionTrace",
    "attributionResult",
    "variantAssignment",
    "identityLink",
    "journeyEnrollment",
    "dynamicSchemaRows",
)


def entry(table: str) -> TableEntry:
    for candidate in TABLES:
        if candidate.table == table:
            return candidate
    raise KeyError(table)


def erasure_order() -> tuple[TableEntry, ...]:
    """The tables erasure deletes from, in the one fixed deletion order.

    Dynamic tables (ds_*) come after these, sorted by name."""
    return tuple(t for t in TABLES if t.erasure is ErasureAction.DELETE)


def retained_tables() -> tuple[TableEntry, ...]:
    """The tables erasure keeps (RETAIN) or redacts (REDACT), each with its legal basis."""
    return tuple(t for t in TABLES if t.erasure is not ErasureAction.DELETE)


def count_keys() -> tuple[str, ...]:
    """Every deletedCounts key, always present: the nine seed keys, then the additions."""
    extra = [
        t.count_key
        for t in erasure_order()
        if t.count_key is not None and t.count_key not in SEED_COUNT_KEYS
    ]
    return (*SEED_COUNT_KEYS, *extra)
