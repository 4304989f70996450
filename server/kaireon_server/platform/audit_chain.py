"""The tamper-evident audit chain: append inside the caller's transaction, verify, redact.

Each row's `integrity_hash` is sha256 over the RFC 8785 canonical JSON of its
content, which includes `prevHash`, the previous row's hash. Appends lock the
tenant's `audit_chain_head` row, so concurrent writers queue instead of forking
the chain; call `append_audit` last in a transaction so that lock is held briefly.
`insert_rows` is the one writer (append_audit is a batch of one); rows that need
no other write in their transaction can go through `AuditBatcher`, which group
commits them per tenant, each batch one statement (`insert_rows_alone`).

Row hashing and chain verification are the client's (kaireon_client/audit_chain.py,
re-exported here): the server hashes what it appends and verifies with the very
code an auditor runs. Personal data (a customer id as entity id, personal values in changes) enters
the hash only through a salted digest, sha256(salt || canonical(value)), kept
beside it. An erasure can then delete the values and salts (`redact_subject`)
while every hash still verifies: the redaction model of ledger databases.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg

from kaireon_client.audit_chain import (
    GENESIS_HASH,
    ChainVerifier,
    VerifyResult,
    integrity_hash,
    personal_digest,
    row_content,
    verify_rows,
)
from kaireon_client.canonical import canonical_json, format_timestamp
from kaireon_server.platform.batching import KeyedBatcher
from kaireon_server.platform.db import Database
from kaireon_server.platform.observability import metrics


@dataclass(frozen=True)
class AuditRecord:
    id: str
    seq: int
    prev_hash: str
    integrity_hash: str
    created_at: datetime


# --- database side -------------------------------------------------------------

_COLUMNS = (
    "tenant_id, seq, id, action, entity_type, entity_id, entity_id_digest, entity_id_salt, "
    "actor, changes, personal, personal_salts, personal_digests, prev_hash, integrity_hash, "
    "created_at, redacted_at"
)

__all__ = [
    "GENESIS_HASH",
    "AuditBatcher",
    "AuditRecord",
    "AuditRow",
    "ChainVerifier",
    "VerifyResult",
    "append_audit",
    "append_audit_at_commit",
    "insert_rows",
    "insert_rows_alone",
    "integrity_hash",
    "normalise_db_row",
    "personal_digest",
    "plaintext_matches",
    "redact_subject",
    "render_changes",
    "row_content",
    "verify_rows",
    "verify_tenant_chain",
]


def normalise_db_row(rec: Mapping[str, Any]) -> dict[str, Any]:
    """A database row in the normalised form `row_content` reads."""
    return {
        "tenantId": rec["tenant_id"],
        "seq": rec["seq"],
        "id": str(rec["id"]),
        "action": rec["action"],
        "entityType": rec["entity_type"],
        "entityId": rec["entity_id"],
        "entityIdDigest": rec["entity_id_digest"],
        "actor": rec["actor"],
        "changes": rec["changes"] or {},
        "personalDigests": rec["personal_digests"] or {},
        "timestamp": format_timestamp(rec["created_at"]),
        "prevHash": rec["prev_hash"],
        "integrityHash": rec["integrity_hash"],
    }


def plaintext_matches(rec: Mapping[str, Any]) -> bool:
    """Unredacted personal values still match their committed digests."""
    entity_id, digest = rec["entity_id"], rec["entity_id_digest"]
    if (
        digest
        and entity_id is not None
        and personal_digest(rec["entity_id_salt"] or "", entity_id) != digest
    ):
        return False
    personal = rec["personal"] or {}
    salts = rec["personal_salts"] or {}
    digests = rec["personal_digests"] or {}
    if set(personal) - set(digests):
        return False
    return all(personal_digest(salts.get(k, ""), v) == digests[k] for k, v in personal.items())


@dataclass(frozen=True, slots=True)
class AuditRow:
    """One row to append, as `append_audit` takes it (see there for the fields)."""

    action: str
    entity_type: str
    entity_id: str
    actor: str
    changes: Mapping[str, Any] = field(default_factory=dict)
    personal: Mapping[str, Any] = field(default_factory=dict)
    entity_id_is_personal: bool = False
    subject_id: str | None = None
    # None: the time the row is written.
    now: datetime | None = None

    def check(self) -> None:
        """Refuse a row that could not be written (before it joins anyone's batch)."""
        if overlap := set(self.changes) & set(self.personal):
            raise ValueError(f"keys both personal and not: {sorted(overlap)}")


# The types of the arrays after the tenant, in _prepared_columns' order.
_COLUMN_TYPES = (
    "uuid", "text", "text", "text", "text", "text", "text", "jsonb", "jsonb", "jsonb", "jsonb",
    "timestamptz", "text", "bytea", "bytea", "text", "text", "integer",
)  # fmt: skip


def _arrays(first: int) -> str:
    """The row arrays as parameters $first.., typed."""
    return ", ".join(f"${first + i}::{kind}[]" for i, kind in enumerate(_COLUMN_TYPES))


# Every row of the call in one statement (migrations 0231, 0242): the tenant's
# chain head locked, the rows chained, their leaf hashes made, the rows inserted
# and the head moved; the lock is held until the caller's COMMIT, one round trip
# later.
_APPEND = f"SELECT seq, prev_hash, integrity_hash FROM kaireon_audit_append($1, {_arrays(2)})"  # noqa: S608 - constant SQL
# The same append as a statement of its own, which sets the tenant (migration
# 0238): AuditBatcher's batch in one round trip.
_APPEND_ALONE = _APPEND.replace("kaireon_audit_append(", "kaireon_audit_append_alone(")
# Where the chain enters a row's canonical content: placeholders that RFC 8785
# writes as these bytes, between "personalDigests" and "tenantId" (sorted keys).
_CHAIN_MARK = b',"prevHash":"","seq":0,"tenantId":'
# Where the transparency-log leaf's own member enters the same content (see
# _leaf_cut): just before "personalDigests", whose value is an object.
_DIGESTS_MARK = b',"personalDigests":{'


def _prepared_columns(tenant_id: str, row: AuditRow) -> tuple[tuple[Any, ...], str, datetime]:
    """The stored columns of `row` but the chain's (seq, prev_hash, integrity_hash)
    and the leaf hash, then the two parts of its canonical content around the
    chain (see _APPEND), the subject's salt and digest, and where the leaf
    differs from the chain's head (_leaf_cut); its id and time.

    The one place a row's salts, digests and hashed content are made; the
    content is kaireon_client's `row_content`, the hash its `integrity_hash`,
    the leaf its `AuditLeaf` (tests hold each two ways equal)."""
    row_id = str(uuid.uuid4())
    created_at = row.now or datetime.now(UTC)
    changes = dict(row.changes)
    personal = dict(row.personal)
    entity_salt = secrets.token_hex(16) if row.entity_id_is_personal else None
    entity_digest = personal_digest(entity_salt, row.entity_id) if entity_salt else None
    salts = {k: secrets.token_hex(16) for k in personal}
    digests = {k: personal_digest(salts[k], v) for k, v in personal.items()}
    subject_salt = secrets.token_hex(16) if row.subject_id is not None else None
    subject_digest = personal_digest(subject_salt, row.subject_id) if subject_salt else None
    content = canonical_json(
        row_content(
            {
                "tenantId": tenant_id,
                "seq": 0,
                "id": row_id,
                "action": row.action,
                "entityType": row.entity_type,
                "entityId": row.entity_id,
                "entityIdDigest": entity_digest,
                "actor": row.actor,
                "changes": changes,
                "personalDigests": digests,
                "timestamp": format_timestamp(created_at),
                "prevHash": GENESIS_HASH,
            }
        )
    )
    # The last mark is the top-level one: only the tenant id and the timestamp,
    # both of fixed shape, follow it.
    cut = content.rindex(_CHAIN_MARK)
    head = content[:cut] + b',"prevHash":"'
    tail = b',"tenantId":' + content[cut + len(_CHAIN_MARK) :]
    columns = (
        uuid.UUID(row_id),
        row.action,
        row.entity_type,
        row.entity_id,
        entity_digest,
        entity_salt,
        row.actor,
        changes,
        personal or None,
        salts or None,
        digests,
        created_at,
        row.subject_id,
        head,
        tail,
        subject_salt,
        subject_digest,
        _leaf_cut(content, cut),
    )
    return columns, row_id, created_at


def _leaf_cut(content: bytes, cut: int) -> int:
    """Where the top-level "personalDigests" member begins in `content` (the
    row's canonical content, its chain placeholders from `cut`): the append
    inserts the leaf's "leafVersion" member there to make the row's
    transparency-log leaf from the chain's head (migration 0242).

    The last `,"personalDigests":{` before `cut` is the top-level member: an
    unescaped quote never occurs inside a string, and the digests object's
    values are strings, so it holds no such member itself."""
    return content.rindex(_DIGESTS_MARK, 0, cut)


async def insert_rows(
    con: asyncpg.Connection, tenant_id: str, rows: Sequence[AuditRow]
) -> list[AuditRecord]:
    """Append `rows`, in order, to the tenant's chain inside the caller's transaction.

    One statement for any number of rows: it locks the chain head (held until
    the caller commits), chains the rows' hashes, writes them and moves the
    head. Salts, digests and canonical content are made before, outside the lock.
    """
    if not con.is_in_transaction():
        raise RuntimeError("audit rows must be appended inside the caller's transaction")
    return await _chained(con, _APPEND, tenant_id, rows)


async def insert_rows_alone(
    con: asyncpg.Connection, tenant_id: str, rows: Sequence[AuditRow]
) -> list[AuditRecord]:
    """`insert_rows` as one statement that is its own transaction (outside any
    other, e.g. on `Database.single_statements()`): committed when it returns."""
    if con.is_in_transaction():
        raise RuntimeError("insert_rows_alone commits by itself: not inside a transaction")
    return await _chained(con, _APPEND_ALONE, tenant_id, rows)


async def _chained(
    con: asyncpg.Connection, sql: str, tenant_id: str, rows: Sequence[AuditRow]
) -> list[AuditRecord]:
    if not rows:
        return []
    columns, made = _columns(tenant_id, rows)
    chained = await con.fetch(sql, tenant_id, *columns)
    records = [
        AuditRecord(row_id, int(c["seq"]), str(c["prev_hash"]), str(c["integrity_hash"]), at)
        for (row_id, at), c in zip(made, chained, strict=True)
    ]
    _count(rows)
    return records


def _columns(
    tenant_id: str, rows: Sequence[AuditRow]
) -> tuple[list[list[Any]], list[tuple[str, datetime]]]:
    """The rows as _APPEND's (and _PEND's) arrays, and each row's (id, time)."""
    for row in rows:
        row.check()
    columns: list[list[Any]] = [[] for _ in _COLUMN_TYPES]
    made: list[tuple[str, datetime]] = []
    for row in rows:
        values, row_id, created_at = _prepared_columns(tenant_id, row)
        for column, value in zip(columns, values, strict=True):
            column.append(value)
        made.append((row_id, created_at))
    return columns, made


def _count(rows: Sequence[AuditRow]) -> None:
    # Counted when written (a later rollback is not subtracted); action is a code constant.
    for row in rows:
        metrics.AUDIT_APPENDS.labels(metrics.action_label(row.action)).inc()


def pending_audit_insert(*, tenant: str, first: int, when: str) -> str:
    """The INSERT of PendingAudit's rows for a caller's `WITH name AS (...)`: the
    same arrays as _APPEND's, parameters $first.. (one per column), written
    unchained; the deferred trigger of migration 0234 chains them (with
    kaireon_audit_append) inside the COMMIT. `tenant`: the SQL of the tenant id;
    rows are written only `when` (SQL over the statement's other CTEs) holds.
    Both are constant SQL of the calling code, never input."""
    return (
        "INSERT INTO audit_pending (tenant_id, id, action, entity_type, entity_id, "  # noqa: S608 - constant SQL
        "entity_id_digest, entity_id_salt, actor, changes, personal, personal_salts, "
        "personal_digests, created_at, subject_id, head, tail, subject_id_salt, "
        "subject_id_digest, leaf_cut) "
        f"SELECT {tenant}, * FROM unnest({_arrays(first)}) WHERE {when}"
    )


_PEND = pending_audit_insert(tenant="$1", first=2, when="true")


async def append_audit_at_commit(con: asyncpg.Connection, tenant_id: str, row: AuditRow) -> str:
    """Append `row` to the tenant's chain when the caller's transaction commits;
    its id. No lock is taken before the COMMIT, which then chains the row
    (migration 0234): for callers that need neither its seq nor its hash before
    they commit. A rollback leaves no row; a failure to chain fails the COMMIT."""
    if not con.is_in_transaction():
        raise RuntimeError("audit rows must be appended inside the caller's transaction")
    columns, [(row_id, _)] = _columns(tenant_id, [row])
    await con.execute(_PEND, tenant_id, *columns)
    _count([row])
    return row_id


@dataclass(frozen=True)
class PendingAudit:
    """Audit rows that a caller's own single statement appends, as one of its
    data-modifying CTEs (pending_audit_insert, `columns` its parameters):
    chained when that statement's transaction commits, as append_audit_at_commit
    does, so a write and its audit row are one round trip (no BEGIN, no COMMIT
    of their own)."""

    rows: tuple[AuditRow, ...]
    columns: list[list[Any]]

    @classmethod
    def of(cls, tenant_id: str, rows: Sequence[AuditRow]) -> PendingAudit:
        columns, _made = _columns(tenant_id, rows)
        return cls(tuple(rows), columns)

    def written(self) -> None:
        """Count the rows once the statement ran (as append_audit_at_commit does)."""
        _count(self.rows)


async def append_audit(
    con: asyncpg.Connection,
    tenant_id: str,
    *,
    action: str,
    entity_type: str,
    entity_id: str,
    actor: str,
    changes: Mapping[str, Any] | None = None,
    personal: Mapping[str, Any] | None = None,
    entity_id_is_personal: bool = False,
    subject_id: str | None = None,
    now: datetime | None = None,
) -> AuditRecord:
    """Append one row to the tenant's chain inside the caller's transaction.

    `changes` must hold no personal data; put personal values in `personal`.
    `subject_id` names the data subject the row concerns (redaction looks it up).
    """
    if not con.is_in_transaction():
        raise RuntimeError("append_audit must run inside the caller's transaction")
    row = AuditRow(
        action=action,
        entity_type=entity_type,
        entity_id=entity_id,
        actor=actor,
        changes=changes or {},
        personal=personal or {},
        entity_id_is_personal=entity_id_is_personal,
        subject_id=subject_id,
        now=now,
    )
    [record] = await insert_rows(con, tenant_id, [row])
    return record


# --- group commit ----------------------------------------------------------------

MAX_BATCH = 200


class AuditBatcher:
    """Group commit of audit rows that need no other write: one statement per batch.

    Appends to one chain are serialised by the chain-head row lock, held until
    commit, so one transaction per row makes the lock hand-over plus a commit
    (a WAL flush) the ceiling of a tenant's append rate. Here rows wait in a
    per-tenant queue (`KeyedBatcher`); one drainer per tenant appends everything
    queued with `insert_rows_alone`, one statement (one lock, one insert, one
    commit), then answers each caller. An idle tenant's row goes alone,
    immediately; under load, batches form by themselves. The rows are those
    `append_audit` writes.

    Failure semantics are the unbatched ones: a caller gets its record only
    after the commit; when the transaction fails, every caller of that batch
    gets the error. A caller that gives up (cancelled) while queued may still
    have its row written, as with a client that hangs up after the commit.
    """

    def __init__(self, db: Database, *, max_batch: int = MAX_BATCH, linger: float = 0.0) -> None:
        self._db = db
        self._batches: KeyedBatcher[str, AuditRow, AuditRecord] = KeyedBatcher(
            self._write, max_batch=max_batch, linger=linger
        )

    async def append(self, tenant_id: str, row: AuditRow) -> AuditRecord:
        """Queue `row` and wait until it is committed to the tenant's chain."""
        row.check()
        return await self._batches.submit(tenant_id, row)

    async def append_many(self, tenant_id: str, rows: Sequence[AuditRow]) -> list[AuditRecord]:
        """`append` of many rows, in order (one wait for them all)."""
        for row in rows:
            row.check()
        return await self._batches.submit_many(tenant_id, rows)

    async def _write(self, tenant_id: str, rows: list[AuditRow]) -> list[AuditRecord]:
        # One round trip: the batch is a statement of its own, not a pooled
        # transaction (BEGIN, tenant, append, COMMIT and the reset: five).
        async with self._db.single_statements() as con:
            return await insert_rows_alone(con, tenant_id, rows)

    async def close(self) -> None:
        """Stop the drainers (at shutdown, after the server stopped taking calls)."""
        await self._batches.close()


async def redact_subject(
    con: asyncpg.Connection, tenant_id: str, subject_id: str, *, keep_ids: Iterable[str] = ()
) -> int:
    """Delete the personal values (and salts) of every row about `subject_id`.

    Hashed content is untouched, so the chain still verifies. Returns rows redacted.
    """
    keep = [uuid.UUID(i) for i in keep_ids]
    result = await con.execute(
        """
        UPDATE audit_log
           SET entity_id = CASE WHEN entity_id_digest IS NULL THEN entity_id END,
               entity_id_salt = NULL, personal = NULL, personal_salts = NULL,
               subject_id = NULL, redacted_at = now()
         WHERE tenant_id = $1 AND subject_id = $2 AND NOT (id = ANY($3::uuid[]))
        """,
        tenant_id,
        subject_id,
        keep,
    )
    return int(result.split()[-1])


async def verify_tenant_chain(con: asyncpg.Connection, tenant_id: str) -> VerifyResult:
    """Verify the whole chain of a tenant, streaming rows with a server-side cursor.

    Run it inside a (preferably repeatable-read, read-only) transaction."""
    head = await con.fetchrow(
        "SELECT seq, head_hash FROM audit_chain_head WHERE tenant_id = $1", tenant_id
    )
    expected = (int(head["seq"]), str(head["head_hash"])) if head else (0, GENESIS_HASH)
    verifier = ChainVerifier(expected_head=expected)
    cursor = con.cursor(
        f"SELECT {_COLUMNS} FROM audit_log WHERE tenant_id = $1 ORDER BY seq",  # noqa: S608 - constant column list
        tenant_id,
        prefetch=500,
    )
    async for rec in cursor:
        if not verifier.feed(normalise_db_row(rec), plaintext_ok=plaintext_matches(rec)):
            break
    result = verifier.result()
    metrics.AUDIT_VERIFICATIONS.labels("valid" if result.valid else "invalid").inc()
    return result


def render_changes(rec: Mapping[str, Any]) -> dict[str, Any]:
    """What an API shows as `changes`: plain changes plus unredacted personal values."""
    merged = dict(rec["changes"] or {})
    merged.update(rec["personal"] or {})
    return merged
