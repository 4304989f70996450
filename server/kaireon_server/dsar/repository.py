"""SQL over dsar_request (the queue), dsar_request_event and dsar_export_chunk.

Every function takes a connection inside the caller's transaction. API reads
and writes filter by tenant. The queue claim is the one cross-tenant query:
workers serve every tenant, and the claimed row's tenant is then set for the
rest of the job.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from kaireon_server.dsar.model import CreateCommand, DsarRecord, LifecycleEntry
from kaireon_server.platform.audit_chain import PendingAudit, pending_audit_insert
from kaireon_server.platform.observability.tracing import TraceCarrier

_REQUEST_COLUMNS = """
    r.tenant_id, r.id, r.request_type, r.subject_id, r.status, r.encrypt, r.progress, r.error,
    r.idempotency_key, r.attempts, r.created_at, r.updated_at, r.completed_at, r.version,
    r.export_attempt, r.export_chunks, r.export_size, r.export_digest, r.export_signature,
    r.export_signing_key_id, r.export_key_version"""
_COLUMNS = (
    _REQUEST_COLUMNS  # noqa: S608 - constant SQL
    + """,
    (r.status = 'completed' AND EXISTS (
        SELECT 1 FROM dsar_export_chunk c
         WHERE c.tenant_id = r.tenant_id AND c.request_id = r.id
           AND c.attempt = r.export_attempt AND c.seq = 0)) AS export_available
"""
)


# CreateDsarRequest in one statement (insert_request_alone):
# kaireon_dsar_create_direct (migration 0239: the request and, when new, its
# lifecycle row) and, only when it inserted $2, the request's audit row ($15..),
# chained at the statement's commit. The audit insert sets the tenant itself,
# before its rows' policy checks, rather than count on the function's setting
# (an order of evaluation PostgreSQL does not promise). A request just queued
# has no export.
_CREATE_AUDIT = pending_audit_insert(
    tenant="(SELECT set_config('kaireon.tenant_id', $1, true))",
    first=15,
    when="EXISTS (SELECT FROM r WHERE r.id = $2)",
)
_CREATE_SQL = f"""
    WITH r AS MATERIALIZED (
        SELECT * FROM kaireon_dsar_create_direct(
            $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
    ), audit AS ({_CREATE_AUDIT})
    SELECT {_REQUEST_COLUMNS}, false AS export_available FROM r
    """  # noqa: S608 - constant SQL


def _request_values(
    tenant_id: str,
    request_id: uuid.UUID,
    cmd: CreateCommand,
    actor: str,
    origin: TraceCarrier | None,
) -> tuple[Any, ...]:
    """A new request's column values, in dsar_request's insert order."""
    return (
        tenant_id,
        request_id,
        cmd.request_type,
        cmd.subject_id,
        cmd.encrypt,
        cmd.idempotency_key,
        actor,
        origin.traceparent if origin is not None else None,
        origin.tracestate if origin is not None else None,
    )


async def insert_request_alone(
    con: asyncpg.Connection,
    tenant_id: str,
    request_id: uuid.UUID,
    cmd: CreateCommand,
    *,
    actor: str,
    origin: TraceCarrier | None,
    audit: PendingAudit,
    lifecycle: LifecycleEntry,
) -> tuple[DsarRecord, bool]:
    """insert_request and, for a new request, its `lifecycle` row and `audit`, in
    one statement that sets the tenant itself (for `Database.single_statements()`):
    (record, created). A request the idempotency key named before comes back as
    stored, without its export's availability (read it again to show it)."""
    row = await con.fetchrow(
        _CREATE_SQL,
        *_request_values(tenant_id, request_id, cmd, actor, origin),
        lifecycle.regulation,
        lifecycle.state,
        lifecycle.received_at,
        lifecycle.default_months,
        lifecycle.default_days,
        *audit.columns,
    )
    assert row is not None  # inserted, or the key's request (committed: ON CONFLICT waited)
    created = row["id"] == request_id
    if created:
        audit.written()
    return DsarRecord.from_row(row), created


async def insert_request(
    con: asyncpg.Connection,
    tenant_id: str,
    cmd: CreateCommand,
    actor: str,
    origin: TraceCarrier | None = None,
) -> tuple[DsarRecord, bool]:
    """Insert a request; with an idempotency key already used, return that one instead.
    `origin` is the trace context of the queuing call, kept for the export job's span."""
    new_id = uuid.uuid4()
    inserted = await con.fetchval(
        """
        INSERT INTO dsar_request (tenant_id, id, request_type, subject_id, encrypt,
                                  idempotency_key, created_by, trace_parent, trace_state)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
        ON CONFLICT (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
        RETURNING id
        """,
        *_request_values(tenant_id, new_id, cmd, actor, origin),
    )
    if inserted is not None:
        record = await get_request(con, tenant_id, new_id)
        assert record is not None
        return record, True
    row = await con.fetchrow(
        f"SELECT {_COLUMNS} FROM dsar_request r WHERE r.tenant_id = $1 AND r.idempotency_key = $2",  # noqa: S608 - constant columns
        tenant_id,
        cmd.idempotency_key,
    )
    assert row is not None  # the conflicting row is committed: ON CONFLICT waited for it
    return DsarRecord.from_row(row), False


async def get_request(
    con: asyncpg.Connection, tenant_id: str, request_id: uuid.UUID, *, lock: bool = False
) -> DsarRecord | None:
    row = await con.fetchrow(
        f"SELECT {_COLUMNS} FROM dsar_request r WHERE r.tenant_id = $1 AND r.id = $2"  # noqa: S608 - constant columns
        + (" FOR UPDATE" if lock else ""),
        tenant_id,
        request_id,
    )
    return DsarRecord.from_row(row) if row is not None else None


def list_requests_query(
    tenant_id: str,
    *,
    status: str | None,
    subject_id: str | None,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> tuple[str, list[Any]]:
    """One statement per filter combination: every filter is an index condition
    in any plan (generic or custom), never an `$n IS NULL OR ...` the planner
    may have to evaluate row by row. Conditions are constant SQL; values are
    parameters."""
    args: list[Any] = [tenant_id]
    where = ["r.tenant_id = $1"]
    if subject_id is not None:
        args.append(subject_id)
        where.append(f"r.subject_id = ${len(args)}")
    if status is not None:
        args.append(status)
        where.append(f"r.status = ${len(args)}")
    if after is not None:
        args.extend(after)
        where.append(f"(r.created_at, r.id) < (${len(args) - 1}, ${len(args)})")
    args.append(limit)
    sql = (
        f"SELECT {_COLUMNS} FROM dsar_request r WHERE {' AND '.join(where)} "  # noqa: S608 - constant SQL
        f"ORDER BY r.created_at DESC, r.id DESC LIMIT ${len(args)}"
    )
    return sql, args


async def list_requests(
    con: asyncpg.Connection,
    tenant_id: str,
    *,
    status: str | None,
    subject_id: str | None,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[DsarRecord]:
    sql, args = list_requests_query(
        tenant_id, status=status, subject_id=subject_id, after=after, limit=limit
    )
    rows = await con.fetch(sql, *args)
    return [DsarRecord.from_row(r) for r in rows]


# The access rows (dsar/requests.py): an inline disclosure is recorded once per
# request and principal; these find and serialise that first record.
ACTION_EXPORT_ACCESSED = "dsar_export_downloaded"
_INLINE_LOCK_NAMESPACE = "kaireon.dsar.inline"


# One probe per id (LATERAL): each is an equality lookup on the partial index,
# where `entity_id = ANY($2)` was left as a filter over the principal's every
# disclosure by the generic plan.
INLINE_DISCLOSED_SQL = """
    SELECT r.id AS entity_id FROM unnest($2::text[]) AS r(id),
    LATERAL (SELECT 1 FROM audit_log a
              WHERE a.tenant_id = $1 AND a.entity_id = r.id AND a.actor = $3
                AND a.action = 'dsar_export_downloaded' AND a.entity_type = 'dsar_request'
                AND a.changes->>'via' = 'inline'
              LIMIT 1) AS hit
"""


async def inline_disclosed(
    con: asyncpg.Connection, tenant_id: str, actor: str, request_ids: Sequence[uuid.UUID]
) -> set[uuid.UUID]:
    """Which of the requests' exports `actor` has already received inline.

    Served by migration 0112's partial index of first inline disclosures."""
    if not request_ids:
        return set()
    rows = await con.fetch(
        INLINE_DISCLOSED_SQL,
        tenant_id,
        [str(i) for i in request_ids],
        actor,
    )
    return {uuid.UUID(r["entity_id"]) for r in rows}


async def lock_inline_disclosure(
    con: asyncpg.Connection, tenant_id: str, request_id: uuid.UUID, actor: str
) -> None:
    """Serialise first inline disclosures of one export to one principal, so two
    concurrent polls record it once (released at commit). Callers take them in
    one order (see dsar/requests.py)."""
    await con.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended("
        "$1 || chr(31) || $2 || chr(31) || $3 || chr(31) || $4, 0))",
        _INLINE_LOCK_NAMESPACE,
        tenant_id,
        str(request_id),
        actor,
    )


# A request's states after a version: served by the primary key
# (tenant_id, request_id, version); a request has a handful.
WATCH_READ_SQL = """
    SELECT * FROM kaireon_dsar_watch_read($1, $2, $3) AS w(
        tenant_id text, id uuid, request_type text, subject_id text, status text,
        encrypt boolean, progress integer, error text, idempotency_key text, attempts integer,
        created_at timestamptz, updated_at timestamptz, completed_at timestamptz,
        version bigint, export_attempt integer, export_chunks integer, export_size bigint,
        export_digest text, export_signature text, export_signing_key_id text,
        export_key_version text, export_available boolean, event_version bigint,
        event_status text, event_progress integer, event_error text,
        event_created_at timestamptz)
"""


async def watch_read(
    con: asyncpg.Connection, tenant_id: str, request_id: uuid.UUID, version: int
) -> tuple[DsarRecord | None, list[dict[str, Any]]]:
    """The request and its recorded states after `version`, in one statement
    (migration 0230); for `Database.single_statements()`."""
    rows = await con.fetch(WATCH_READ_SQL, tenant_id, request_id, version)
    if not rows:
        return None, []
    events = [
        {
            "version": r["event_version"],
            "status": r["event_status"],
            "progress": r["event_progress"],
            "error": r["event_error"],
            "created_at": r["event_created_at"],
        }
        for r in rows
        if r["event_version"] is not None
    ]
    return DsarRecord.from_row(rows[0]), events


async def read_chunk(
    con: asyncpg.Connection, tenant_id: str, request_id: uuid.UUID, attempt: int, seq: int
) -> bytes | None:
    data: bytes | None = await con.fetchval(
        "SELECT data FROM dsar_export_chunk "
        "WHERE tenant_id = $1 AND request_id = $2 AND attempt = $3 AND seq = $4",
        tenant_id,
        request_id,
        attempt,
        seq,
    )
    return data


async def read_document(con: asyncpg.Connection, record: DsarRecord) -> bytes | None:
    """The whole stored export (callers only do this below the inline limit)."""
    rows = await con.fetch(
        "SELECT data FROM dsar_export_chunk "
        "WHERE tenant_id = $1 AND request_id = $2 AND attempt = $3 ORDER BY seq",
        record.tenant_id,
        record.id,
        record.export_attempt,
    )
    if len(rows) != record.export_chunks:
        return None
    return b"".join(bytes(r["data"]) for r in rows)


async def completion_event_id(con: asyncpg.Connection, record: DsarRecord) -> str | None:
    """The audit row that recorded this export's completion (and its digest)."""
    # The literal `action <> 'decision_provenance_emit'` lets audit_log_citation_idx serve it.
    row_id = await con.fetchval(
        "SELECT id FROM audit_log WHERE tenant_id = $1 AND entity_type = 'dsar_request' "
        "AND entity_id = $2 AND action <> 'decision_provenance_emit' "
        "AND action = 'dsar_export_completed' AND changes->>'digestSha256' = $3 "
        "ORDER BY seq DESC LIMIT 1",
        record.tenant_id,
        str(record.id),
        record.export_digest,
    )
    return None if row_id is None else str(row_id)


# --- the queue ------------------------------------------------------------------


async def claim_next(
    con: asyncpg.Connection,
    owner: str,
    lease_seconds: float,
    max_attempts: int,
    *,
    can_encrypt: bool,
) -> asyncpg.Record | None:
    """Take the oldest due job, or one whose worker's lease ran out; start an attempt.

    SKIP LOCKED lets concurrent workers claim different rows without waiting.
    A worker without encryption keys leaves encrypted jobs to one that has them.
    One statement (migration 0230), so it needs no transaction of its own.
    """
    # Across tenants: the choice through migration 0100's SECURITY DEFINER function
    # (keys only; row-level security shows the application role no rows before a
    # tenant is set), the UPDATE under the chosen row's tenant.
    row: asyncpg.Record | None = await con.fetchrow(
        "SELECT * FROM kaireon_dsar_claim($1, $2, $3, $4)",
        owner,
        lease_seconds,
        max_attempts,
        can_encrypt,
    )
    return row


async def lock_exhausted(con: asyncpg.Connection, max_attempts: int) -> asyncpg.Record | None:
    """A processing job whose lease ran out with no attempts left (its workers died),
    locked; the transaction's tenant is then set to the job's."""
    key = await con.fetchrow(
        "SELECT tenant_id, id FROM kaireon_dsar_exhausted_job($1)", max_attempts
    )
    if key is None:
        return None
    await con.execute("SELECT set_config('kaireon.tenant_id', $1, true)", key["tenant_id"])
    row: asyncpg.Record | None = await con.fetchrow(
        "SELECT tenant_id, id, subject_id, attempts FROM dsar_request"
        " WHERE tenant_id = $1 AND id = $2",
        key["tenant_id"],
        key["id"],
    )
    return row


# The row of an attempt that still owns its job, found by its key alone: no
# index on status, whose 'processing' entries include every attempt since the
# last vacuum (migration 0241 says why).
OWNED = (
    "tenant_id = $1 AND id = $2 AND lease_owner = $3 AND attempts = $4 "
    "AND status IS NOT DISTINCT FROM 'processing'"
)
# A job found abandoned (no lease to check), by its key alone as OWNED.
ABANDONED = "tenant_id = $1 AND id = $2 AND status IS NOT DISTINCT FROM 'processing'"


@dataclass(frozen=True)
class Lease:
    """One attempt's ownership of a job: valid while the row still names it."""

    tenant_id: str
    request_id: uuid.UUID
    owner: str
    attempt: int

    @property
    def args(self) -> tuple[str, uuid.UUID, str, int]:
        return (self.tenant_id, self.request_id, self.owner, self.attempt)


async def heartbeat(con: asyncpg.Connection, lease: Lease, lease_seconds: float) -> bool:
    """Extend the lease; False when this attempt no longer owns the job."""
    status = await con.execute(
        "UPDATE dsar_request SET heartbeat_at = clock_timestamp(), "  # noqa: S608 - constant
        "lease_expires_at = clock_timestamp() + make_interval(secs => $5) "
        f"WHERE {OWNED}",
        *lease.args,
        lease_seconds,
    )
    return bool(status == "UPDATE 1")


async def set_progress(con: asyncpg.Connection, lease: Lease, progress: int) -> bool:
    status = await con.execute(
        f"UPDATE dsar_request SET progress = $5 WHERE {OWNED} AND progress < $5",  # noqa: S608
        *lease.args,
        progress,
    )
    return bool(status == "UPDATE 1")


# complete(): the lease's $1-$4, the export's $5-$11, the audit row's arrays $12..
_COMPLETE_AUDIT = pending_audit_insert(tenant="$1", first=12, when="EXISTS (SELECT FROM done)")
_COMPLETE_SQL = f"""
    WITH done AS (
        UPDATE dsar_request
           SET status = 'completed', progress = 100, error = NULL,
               completed_at = clock_timestamp(), lease_owner = NULL, lease_expires_at = NULL,
               export_attempt = $4, export_chunks = $5, export_size = $6, export_rows = $7,
               export_digest = $8, export_signature = $9, export_signing_key_id = $10,
               export_key_version = $11
         WHERE {OWNED}
        RETURNING tenant_id, id
    ), stale AS (
        DELETE FROM dsar_export_chunk c USING done
         WHERE c.tenant_id = done.tenant_id AND c.request_id = done.id AND c.attempt <> $4
    ), audit AS ({_COMPLETE_AUDIT})
    SELECT EXISTS (SELECT 1 FROM done)
    """  # noqa: S608 - constant SQL


async def complete(
    con: asyncpg.Connection, lease: Lease, export: Mapping[str, Any], audit: PendingAudit
) -> bool:
    """Mark the job completed with its export and append `audit` (chained at the
    transaction's commit); False, and nothing written, when the attempt lost its
    lease.

    In the same statement, chunks of other attempts are deleted: only this
    attempt's can be committed (a guard, normally a no-op)."""
    done: bool = await con.fetchval(
        _COMPLETE_SQL,
        *lease.args,
        export["chunks"],
        export["size"],
        export["rows"],
        export["digest"],
        export["signature"],
        export["signing_key_id"],
        export["key_version"],
        *audit.columns,
    )
    if done:
        audit.written()
    return done


async def reschedule(
    con: asyncpg.Connection,
    lease: Lease,
    *,
    delay_seconds: float,
    error: str | None,
    refund_attempt: bool = False,
) -> bool:
    """Back to pending: a retry after `delay_seconds`, or a hand-over on shutdown."""
    status = await con.execute(
        f"""
        UPDATE dsar_request
           SET status = 'pending', progress = 0, error = $5, lease_owner = NULL,
               lease_expires_at = NULL,
               attempts = attempts - CASE WHEN $7 THEN 1 ELSE 0 END,
               run_after = clock_timestamp() + make_interval(secs => $6)
         WHERE {OWNED}
        """,  # noqa: S608 - constant condition
        *lease.args,
        error,
        delay_seconds,
        refund_attempt,
    )
    return bool(status == "UPDATE 1")


async def fail(
    con: asyncpg.Connection,
    tenant_id: str,
    request_id: uuid.UUID,
    error: str,
    *,
    lease: Lease | None,
) -> bool:
    """Mark failed: by the owning attempt, or (lease None) a job found abandoned."""
    args: list[Any]
    if lease is not None:
        condition, args = OWNED, list(lease.args)
    else:
        condition = ABANDONED
        args = [tenant_id, request_id]
    status = await con.execute(
        f"""
        UPDATE dsar_request
           SET status = 'failed', error = ${len(args) + 1}, lease_owner = NULL,
               lease_expires_at = NULL, completed_at = clock_timestamp()
         WHERE {condition}
        """,  # noqa: S608 - constant condition
        *args,
        error,
    )
    return bool(status == "UPDATE 1")


async def insert_chunk(
    con: asyncpg.Connection,
    tenant_id: str,
    request_id: uuid.UUID,
    *,
    attempt: int,
    seq: int,
    subject_id: str,
    data: bytes,
) -> None:
    await con.execute(
        "INSERT INTO dsar_export_chunk (tenant_id, request_id, attempt, seq, subject_id, data) "
        "VALUES ($1, $2, $3, $4, $5, $6)",
        tenant_id,
        request_id,
        attempt,
        seq,
        subject_id,
        data,
    )
