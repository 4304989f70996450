"""Group commit of emission audit rows: one transaction (one chain lock) per batch.

Every emission appends a row to its tenant's audit chain, and appends to one
chain are serialised by the chain-head row lock, held until commit. One
transaction per row made the lock hand-over plus a commit (a WAL flush) the
ceiling of a tenant's bundle rate, and connections queued for the lock
starved the snapshot reads. Here rows wait in a per-tenant queue; one drainer
per tenant appends everything queued in one transaction: the chain head is
locked once, the rows' hashes are chained in memory with the platform's
`integrity_hash`, all rows go in with one pipelined `executemany`, the head
moves once, one commit; then each caller is answered. An idle tenant's row
goes alone, immediately; under load, batches form by themselves.

The rows are exactly what `append_audit` writes for non-personal rows (a test
compares the two column by column, and the chain verifier recomputes every
hash); personal values are never queued here. This belongs in
platform/audit_chain.py for every capability; it lives here until it moves.

Failure semantics are the unbatched ones: the caller gets its record only
after the commit; when the transaction fails, every caller of that batch gets
the error and no bundle is returned. A caller that gives up (cancelled) while
queued may still have its row written, as with a client that hangs up after
the server committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import defaultdict, deque
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kaireon_server.platform.audit_chain import GENESIS_HASH, AuditRecord, integrity_hash
from kaireon_server.platform.canonical import format_timestamp
from kaireon_server.platform.db import Database
from kaireon_server.platform.errors import Unavailable

MAX_BATCH = 200


@dataclass(frozen=True, slots=True)
class PendingRow:
    action: str
    entity_type: str
    entity_id: str
    actor: str
    changes: Mapping[str, Any]
    subject_id: str | None
    now: datetime


def _stopped() -> Exception:
    return Unavailable("the server is shutting down; retry", reason="SHUTTING_DOWN")


class AuditBatcher:
    def __init__(self, db: Database, *, max_batch: int = MAX_BATCH) -> None:
        self._db = db
        self._max_batch = max_batch
        self._queues: defaultdict[str, deque[tuple[PendingRow, asyncio.Future[AuditRecord]]]] = (
            defaultdict(deque)
        )
        self._drainers: dict[str, asyncio.Task[None]] = {}

    async def append(self, tenant_id: str, row: PendingRow) -> AuditRecord:
        """Queue `row` and wait until it is committed to the tenant's chain."""
        future: asyncio.Future[AuditRecord] = asyncio.get_running_loop().create_future()
        # Retrieved here, so a caller that gave up leaves no "never retrieved" warning.
        future.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._queues[tenant_id].append((row, future))
        if tenant_id not in self._drainers:
            self._drainers[tenant_id] = asyncio.create_task(self._drain(tenant_id))
        # Shielded: a caller that gives up must not cancel the batch of the others.
        return await asyncio.shield(future)

    async def _drain(self, tenant_id: str) -> None:
        queue = self._queues[tenant_id]
        try:
            while queue:
                batch = [queue.popleft() for _ in range(min(len(queue), self._max_batch))]
                try:
                    records = await self._write(tenant_id, [row for row, _ in batch])
                except BaseException as exc:
                    stopped = isinstance(exc, asyncio.CancelledError)
                    for _, future in batch:
                        if not future.done():
                            # Callers are not cancelled themselves: tell them why.
                            future.set_exception(_stopped() if stopped else exc)
                    if stopped:
                        raise
                    continue
                for (_, future), record in zip(batch, records, strict=True):
                    if not future.done():
                        future.set_result(record)
        finally:
            self._drainers.pop(tenant_id, None)
            if not queue:
                self._queues.pop(tenant_id, None)
            else:
                # Rows queued while this drainer was being cancelled: fail them
                # rather than leave their callers waiting forever.
                while queue:
                    _, future = queue.popleft()
                    if not future.done():
                        future.set_exception(_stopped())

    async def _write(self, tenant_id: str, rows: list[PendingRow]) -> list[AuditRecord]:
        records: list[AuditRecord] = []
        values: list[tuple[Any, ...]] = []
        async with self._db.transaction(tenant_id) as con:
            await con.execute(
                "INSERT INTO audit_chain_head (tenant_id, seq, head_hash) VALUES ($1, 0, $2) "
                "ON CONFLICT (tenant_id) DO NOTHING",
                tenant_id,
                GENESIS_HASH,
            )
            head = await con.fetchrow(
                "SELECT seq, head_hash FROM audit_chain_head WHERE tenant_id = $1 FOR UPDATE",
                tenant_id,
            )
            assert head is not None
            seq, prev_hash = int(head["seq"]), str(head["head_hash"])
            for row in rows:
                seq += 1
                row_id = str(uuid.uuid4())
                changes = dict(row.changes)
                digest = integrity_hash(
                    {
                        "tenantId": tenant_id,
                        "seq": seq,
                        "id": row_id,
                        "action": row.action,
                        "entityType": row.entity_type,
                        "entityId": row.entity_id,
                        "entityIdDigest": None,
                        "actor": row.actor,
                        "changes": changes,
                        "personalDigests": {},
                        "timestamp": format_timestamp(row.now),
                        "prevHash": prev_hash,
                    }
                )
                values.append(
                    (
                        tenant_id,
                        seq,
                        uuid.UUID(row_id),
                        row.action,
                        row.entity_type,
                        row.entity_id,
                        row.actor,
                        changes,
                        prev_hash,
                        digest,
                        row.now,
                        row.subject_id,
                    )
                )
                records.append(AuditRecord(row_id, seq, prev_hash, digest, row.now))
                prev_hash = digest
            await con.executemany(
                """
                INSERT INTO audit_log (tenant_id, seq, id, action, entity_type, entity_id,
                    entity_id_digest, entity_id_salt, actor, changes, personal, personal_salts,
                    personal_digests, prev_hash, integrity_hash, created_at, subject_id)
                VALUES ($1, $2, $3, $4, $5, $6, NULL, NULL, $7, $8, NULL, NULL, '{}'::jsonb,
                    $9, $10, $11, $12)
                """,
                values,
            )
            await con.execute(
                "UPDATE audit_chain_head SET seq = $2, head_hash = $3 WHERE tenant_id = $1",
                tenant_id,
                seq,
                prev_hash,
            )
        return records

    async def close(self) -> None:
        """Stop the drainers (at shutdown, after the server stopped taking calls)."""
        drainers = list(self._drainers.values())
        for task in drainers:
            task.cancel()
        for task in drainers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        # A drainer cancelled before it ever ran left its queue untouched.
        for queue in self._queues.values():
            while queue:
                _, future = queue.popleft()
                if not future.done():
                    future.set_exception(_stopped())
        self._queues.clear()
        self._drainers.clear()
