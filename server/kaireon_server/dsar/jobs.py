"""One export attempt: snapshot, stream, store, sign, complete — all or nothing.

The writer, a connection outside the pool reused from one export to the next
(`Database.leased_connection`), takes the subject's erasure lock (shared) in
its transaction, stores every chunk and finally marks the request completed
with its audit row, so the export and its completion commit together or not at
all. An erasure of the subject either finished before the lock was granted
(the export shows the erased state) or waits for this transaction and then
deletes the stored export too. No stale copy survives an erasure.

A small export (up to SMALL_EXPORT_ROWS rows) is read on the writer, after the
lock, in the one statement that counts its rows (one statement, one snapshot).
A larger one is then streamed by COPY table by table from a REPEATABLE READ
snapshot on a second leased connection, opened while the lock is held.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import asyncpg

from kaireon_client.envelope import KeyRing
from kaireon_server.dsar import repository
from kaireon_server.dsar.exporter import (
    SNAPSHOT_SETTINGS,
    ExportHeader,
    Snapshot,
    count_and_read,
    start_snapshot,
    write_document,
)
from kaireon_server.dsar.model import Claim, audit_row
from kaireon_server.dsar.plan import (
    CATALOGUE_SQL,
    TableExport,
    mapped_tables,
    plan_from_catalogue,
)
from kaireon_server.dsar.settings import DsarSettings
from kaireon_server.dsar.store import ChunkStore, DigestSigner, EncryptingSink, envelope_writer
from kaireon_server.platform import data_map
from kaireon_server.platform.audit_chain import PendingAudit
from kaireon_server.platform.canonical import format_timestamp
from kaireon_server.platform.db import Database
from kaireon_server.platform.observability import metrics

WORKER_ACTOR = "system:dsar-worker"
APPLICATION_NAME = "kaireon-dsar-export"
# An export's transactions are never idle for long: the next chunk insert or
# COPY follows at once (after the throttle's pause). One idle this long is a
# stalled worker; PostgreSQL then ends it, and the attempt fails and is retried
# instead of holding its locks until the process dies.
IDLE_FLOOR_SECONDS = 60.0

# The export's opening, one statement on the writer: the lock ErasureService
# takes per subject (erasure/repository.py lock_subject: same namespace and key
# expression, here in shared mode), then the snapshot settings and the time
# the lock was granted (the export's `exportedAt`: its rows are read by the
# statements after it), beside the catalogue the plan is built from.
_CATALOGUE = CATALOGUE_SQL.format(tables="$6", tenant="$1", column="$7")
# Constant pieces only: every value is a parameter.
_OPEN_EXPORT = f"""
    WITH locked AS MATERIALIZED (
        SELECT pg_advisory_xact_lock_shared(hashtextextended(
            'kaireon.erasure.subject' || chr(31) || $1 || chr(31) || $2, 0))),
    opened AS MATERIALIZED (
        SELECT {SNAPSHOT_SETTINGS}, clock_timestamp() AS now FROM locked)
    SELECT opened.now, c.* FROM opened LEFT JOIN ({_CATALOGUE}) c ON true
"""  # noqa: S608


class PermanentFailure(Exception):
    """Retrying cannot help (e.g. encryption asked for, no key configured)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class LeaseLost(Exception):
    """Another worker owns the job now; this attempt must leave no trace."""


@dataclass(frozen=True)
class JobDeps:
    db: Database
    settings: DsarSettings
    signer: DigestSigner
    keyring: KeyRing | None
    owner: str


@dataclass
class _Attempt:
    """The resources of one attempt, released together whatever happens."""

    db: Database
    writer: asyncpg.Connection | None = None
    reader: asyncpg.Connection | None = None
    store: ChunkStore | None = None

    async def release(self, *, committed: bool) -> None:
        for con in (self.reader, self.writer):
            if con is None:
                continue
            if committed:
                # Kept for the next export: opening one (connect, authentication,
                # codec set-up) costs more than a small export itself. An
                # attempt changes nothing that outlives its transactions (settings
                # and the erasure lock are transaction-local), so no reset.
                await self.db.give_back(con, APPLICATION_NAME, reset=False)
            else:
                # Mid-COPY or mid-insert: never attempt a polite ROLLBACK on a busy
                # connection. Dropping the socket makes the server roll back.
                con.terminate()
        if self.store is not None:
            await self.store.abort()


async def open_export(con: asyncpg.Connection, snapshot: Snapshot) -> tuple[str, list[TableExport]]:
    """_OPEN_EXPORT in `con`'s open transaction: the export's `exportedAt` and plan."""
    rows = await con.fetch(
        _OPEN_EXPORT,
        *snapshot.arguments(),
        mapped_tables(),
        data_map.DYNAMIC_SCHEMA_SUBJECT_COLUMN,
    )
    plan = plan_from_catalogue([r for r in rows if r["name"] is not None])
    return format_timestamp(rows[0]["now"]), plan


def idle_timeout_ms(settings: DsarSettings) -> int:
    """The idle bound of an export's transactions: past the lease the job is
    another worker's anyway, and never under a minute."""
    seconds = max(IDLE_FLOOR_SECONDS, settings.lease_seconds) + settings.throttle_seconds
    return int(seconds * 1000)


async def run_export(deps: JobDeps, claim: Claim, on_progress: Callable[[int, int], None]) -> int:
    """Run one attempt to completion; return the number of rows exported.

    Raises LeaseLost when the lease moved on, PermanentFailure for hopeless
    jobs, anything else for failures worth a retry.
    """
    if claim.encrypt and deps.keyring is None:
        raise PermanentFailure("encryption_not_configured")
    attempt = _Attempt(deps.db)
    committed = False
    try:
        # Outside the pool (long COPY, long transaction), with the pool's json
        # codecs, which append_audit relies on.
        attempt.writer = writer = await deps.db.leased_connection(APPLICATION_NAME)
        transaction = writer.transaction()
        await transaction.start()
        rows, meta = await _stream(deps, claim, attempt, on_progress)
        lease = repository.Lease(claim.tenant_id, claim.request_id, deps.owner, claim.attempt)
        # The completion and its audit row: one statement, chained at the COMMIT.
        completed = audit_row(
            "dsar_export_completed",
            claim.request_id,
            claim.subject_id,
            WORKER_ACTOR,
            {
                "attempt": claim.attempt,
                "rows": rows,
                "sizeBytes": meta["size"],
                "digestSha256": meta["digest"],
                "encrypted": claim.encrypt,
                "keyVersion": meta["key_version"],
            },
        )
        audit = PendingAudit.of(claim.tenant_id, [completed])
        if not await repository.complete(writer, lease, meta, audit):
            raise LeaseLost()
        await transaction.commit()
        committed = True
        return rows
    finally:
        await attempt.release(committed=committed)


async def _stream(
    deps: JobDeps,
    claim: Claim,
    attempt: _Attempt,
    on_progress: Callable[[int, int], None],
) -> tuple[int, dict[str, object]]:
    settings = deps.settings
    writer = attempt.writer
    assert writer is not None

    values = Snapshot(
        claim.tenant_id,
        claim.subject_id,
        str(claim.request_id),
        statement_timeout_ms=settings.export_statement_timeout_ms,
        idle_timeout_ms=idle_timeout_ms(settings),
    )
    # On the writer, after its erasure lock: counts and a small export's rows are
    # one statement, so one snapshot, and no erasure of the subject can commit
    # until this transaction does.
    exported_at, plan = await open_export(writer, values)
    counts, rows = await count_and_read(writer, plan)
    total = sum(counts)
    reader: asyncpg.Connection = writer
    snapshot = None
    if rows is None:
        # A large export is streamed by COPY, table by table: all from one
        # REPEATABLE READ snapshot on a second connection, started now (the lock
        # is held), and counted again in it.
        attempt.reader = reader = await deps.db.leased_connection(APPLICATION_NAME)
        snapshot = reader.transaction(isolation="repeatable_read", readonly=True)
        await snapshot.start()
        await start_snapshot(reader, values)
        counts, _ = await count_and_read(reader, plan, small_limit=-1)
        total = sum(counts)
    attempt.store = store = ChunkStore(
        writer,
        tenant_id=claim.tenant_id,
        request_id=claim.request_id,
        attempt=claim.attempt,
        subject_id=claim.subject_id,
        chunk_bytes=settings.chunk_bytes,
        throttle_seconds=settings.throttle_seconds,
    )
    done = 0

    def rows_done(n: int) -> None:
        nonlocal done
        done += n
        on_progress(done, total)

    header = ExportHeader(str(claim.request_id), claim.subject_id, exported_at)
    key_version: str | None = None
    if claim.encrypt:
        assert deps.keyring is not None
        envelope = envelope_writer(
            deps.keyring,
            tenant_id=claim.tenant_id,
            request_id=str(claim.request_id),
            exported_at=exported_at,
        )
        key_version = envelope.key_version
        sink = EncryptingSink(store, envelope)
        await write_document(reader, plan, counts, header, sink=sink, on_rows=rows_done, rows=rows)
        await sink.finish()
    else:
        await write_document(reader, plan, counts, header, sink=store, on_rows=rows_done, rows=rows)
    stored = await store.close()
    metrics.DSAR_EXPORT_BYTES.observe(stored.size)
    if snapshot is not None:
        await snapshot.rollback()  # read-only: nothing to keep, the snapshot is released
    meta: dict[str, object] = {
        "chunks": stored.chunks,
        "size": stored.size,
        "rows": total,
        "digest": stored.digest_hex,
        "signature": deps.signer.sign_digest(stored.digest),
        "signing_key_id": deps.signer.key_id or None,
        "key_version": key_version,
    }
    return total, meta
