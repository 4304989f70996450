"""The group-committing audit writer: batches form under load, the chain stays valid,
a failed batch fails all its callers and writes nothing."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime

import asyncpg
import pytest

from kaireon.audit.v1 import audit_pb2, audit_pb2_grpc
from kaireon_server.audit.tlog import leaf_of
from kaireon_server.platform.audit_chain import (
    AuditBatcher,
    AuditRow,
    append_audit,
    plaintext_matches,
    redact_subject,
)
from kaireon_server.platform.errors import Unavailable
from tests.provenance.conftest import AFTER_CHANGE, BEFORE_CHANGE, fetch
from tests.support.server import metadata


class CountingBatcher(AuditBatcher):
    """Records the size of every batch it writes (the real writes still happen)."""

    def __init__(self, db) -> None:
        super().__init__(db)
        self.batches: list[int] = []

    async def _write(self, tenant_id, rows):
        self.batches.append(len(rows))
        return await super()._write(tenant_id, rows)


def _row(n: int, actor: str | None = "tester") -> AuditRow:
    return AuditRow(
        action="batch_test",
        entity_type="decision",
        entity_id=f"d{n}",
        actor=actor,  # type: ignore[arg-type]
        changes={"n": n},
        subject_id=None,
        now=datetime(2026, 5, 1, tzinfo=UTC),
    )


async def _chain_valid(channel, tenant) -> audit_pb2.VerifyChainResponse:
    stub = audit_pb2_grpc.AuditServiceStub(channel)
    return await stub.VerifyChain(audit_pb2.VerifyChainRequest(), metadata=metadata(tenant))


async def _n_by_row_id(db, tenant) -> dict[str, int]:
    """Each stored row's id -> the `n` of the `_row` it was made from."""
    async with db.transaction(tenant) as con:
        rows = await con.fetch("SELECT id, changes FROM audit_log WHERE tenant_id = $1", tenant)
    return {str(r["id"]): r["changes"]["n"] for r in rows}


async def test_concurrent_appends_are_batched_and_the_chain_verifies(db, channel, tenant):
    batcher = CountingBatcher(db)
    records = await asyncio.gather(*(batcher.append(tenant, _row(n)) for n in range(60)))
    assert sum(batcher.batches) == 60
    assert len(batcher.batches) < 60  # at least one batch held several rows
    assert sorted(r.seq for r in records) == list(range(1, 61))
    # Each caller got its own row back.
    stored = await _n_by_row_id(db, tenant)
    assert [stored[r.id] for r in records] == list(range(60))
    reply = await _chain_valid(channel, tenant)
    assert reply.valid and reply.rows_checked == 60


async def test_a_failed_batch_fails_every_caller_and_writes_nothing(db, channel, tenant):
    batcher = CountingBatcher(db)
    first = asyncio.ensure_future(batcher.append(tenant, _row(0)))
    await asyncio.sleep(0)  # the drainer takes row 0 alone; the next rows queue behind it
    rest = [asyncio.ensure_future(batcher.append(tenant, _row(n))) for n in (1, 2)]
    bad = asyncio.ensure_future(batcher.append(tenant, _row(3, actor=None)))
    assert (await first).seq == 1
    results = await asyncio.gather(*rest, bad, return_exceptions=True)
    assert all(isinstance(r, asyncpg.NotNullViolationError) for r in results)
    assert batcher.batches == [1, 3]
    async with db.transaction(tenant) as con:
        count = await con.fetchval("SELECT count(*) FROM audit_log WHERE tenant_id = $1", tenant)
    assert count == 1
    # The writer carries on after a failed batch.
    assert (await batcher.append(tenant, _row(4))).seq == 2
    assert (await _chain_valid(channel, tenant)).valid


async def test_a_caller_that_gives_up_does_not_cancel_the_batch(db, tenant):
    batcher = AuditBatcher(db)
    keep = asyncio.ensure_future(batcher.append(tenant, _row(0)))
    gone = asyncio.ensure_future(batcher.append(tenant, _row(1)))
    await asyncio.sleep(0)
    gone.cancel()
    assert (await keep).seq == 1
    with pytest.raises(asyncio.CancelledError):
        await gone


async def test_many_concurrent_emissions_each_write_one_row(channel, seeded, db):
    bundles = await asyncio.gather(
        *(fetch(channel, seeded, (BEFORE_CHANGE, AFTER_CHANGE)[i % 2]) for i in range(40))
    )
    assert {b.digest for b in bundles[0::2]} == {bundles[0].digest}
    assert {b.digest for b in bundles[1::2]} == {bundles[1].digest}
    async with db.transaction(seeded) as con:
        digests = [
            r["changes"]["digestSha256"]
            for r in await con.fetch(
                "SELECT changes FROM audit_log WHERE tenant_id = $1 "
                "AND action = 'decision_provenance_emit'",
                seeded,
            )
        ]
    assert sorted(digests) == sorted(b.digest for b in bundles)
    reply = await _chain_valid(channel, seeded)
    assert reply.valid and reply.rows_checked == 6 + 40


async def test_batched_rows_are_the_rows_append_audit_writes(db, tenant):
    """Column for column, so the batch path cannot drift from the platform's."""
    row = _row(7)
    plain_tenant, batch_tenant = tenant + "p", tenant + "b"
    async with db.transaction(plain_tenant) as con:
        await append_audit(
            con,
            plain_tenant,
            action=row.action,
            entity_type=row.entity_type,
            entity_id=row.entity_id,
            actor=row.actor,
            changes=row.changes,
            subject_id="cust_1",
            now=row.now,
        )
    batcher = AuditBatcher(db)
    await batcher.append(batch_tenant, dataclasses.replace(row, subject_id="cust_1"))
    rows = {}
    for t in (plain_tenant, batch_tenant):
        async with db.transaction(t) as con:
            rec = await con.fetchrow("SELECT * FROM audit_log WHERE tenant_id = $1", t)
            head = await con.fetchrow("SELECT * FROM audit_chain_head WHERE tenant_id = $1", t)
        rows[t] = {
            k: v
            for k, v in dict(rec).items()
            # The subject's salt is random; its digest and the leaf follow from it.
            if k
            not in {
                "tenant_id",
                "id",
                "integrity_hash",
                "subject_id_salt",
                "subject_id_digest",
                "leaf_hash",
            }
        }
        assert rec["subject_id_salt"] and rec["subject_id_digest"]
        assert rec["leaf_hash"] == leaf_of(rec).leaf_hash()
        assert head["head_hash"] == rec["integrity_hash"] and head["seq"] == 1
    assert rows[plain_tenant] == rows[batch_tenant]


async def test_personal_rows_through_the_batcher_are_the_rows_append_audit_writes(
    db, channel, tenant
):
    """The shared writer takes personal rows too (what DSAR and erasure would queue):
    the same columns except the random salts, digests that match the values, a chain
    that verifies before and after redaction."""
    row = AuditRow(
        action="customer_touched",
        entity_type="customer",
        entity_id="cust_9",
        actor="tester",
        changes={"n": 9},
        personal={"email": "nine@example.org"},
        entity_id_is_personal=True,
        subject_id="cust_9",
        now=datetime(2026, 5, 1, tzinfo=UTC),
    )
    plain_tenant, batch_tenant = tenant + "p", tenant + "b"
    async with db.transaction(plain_tenant) as con:
        await append_audit(
            con,
            plain_tenant,
            action=row.action,
            entity_type=row.entity_type,
            entity_id=row.entity_id,
            actor=row.actor,
            changes=row.changes,
            personal=row.personal,
            entity_id_is_personal=True,
            subject_id=row.subject_id,
            now=row.now,
        )
    await AuditBatcher(db).append(batch_tenant, row)
    salted = {"entity_id_digest", "entity_id_salt", "personal_salts", "personal_digests"}
    salted |= {"subject_id_salt", "subject_id_digest", "leaf_hash"}
    rows = {}
    for t in (plain_tenant, batch_tenant):
        async with db.transaction(t) as con:
            rec = await con.fetchrow("SELECT * FROM audit_log WHERE tenant_id = $1", t)
        assert plaintext_matches(rec)
        assert set(rec["personal_salts"]) == set(rec["personal_digests"]) == {"email"}
        assert rec["entity_id_digest"] and rec["entity_id_salt"]
        assert rec["leaf_hash"] == leaf_of(rec).leaf_hash()
        rows[t] = {
            k: v
            for k, v in dict(rec).items()
            if k not in {"tenant_id", "id", "integrity_hash", *salted}
        }
        assert (await _chain_valid(channel, t)).valid
    assert rows[plain_tenant] == rows[batch_tenant]
    async with db.transaction(batch_tenant) as con:
        assert await redact_subject(con, batch_tenant, "cust_9") == 1
    assert (await _chain_valid(channel, batch_tenant)).valid


async def test_a_row_with_keys_both_personal_and_not_is_refused_before_queueing(db, tenant):
    batcher = AuditBatcher(db)
    bad = dataclasses.replace(_row(1), personal={"n": "x"})
    with pytest.raises(ValueError, match="both personal and not"):
        await batcher.append(tenant, bad)
    # Nothing was queued: the next row is the chain's first.
    assert (await batcher.append(tenant, _row(2))).seq == 1


async def test_append_many_commits_rows_in_order_beside_single_appends(db, channel, tenant):
    """A caller's rows (a stream's batch) keep their order in the chain, even
    with other callers' rows queued around them, and each gets its own record."""
    batcher = CountingBatcher(db)
    many, *singles = await asyncio.gather(
        batcher.append_many(tenant, [_row(n) for n in range(50)]),
        *(batcher.append(tenant, _row(100 + n)) for n in range(5)),
    )
    seqs = [r.seq for r in many]
    assert seqs == sorted(seqs) and len(set(seqs)) == 50
    assert sorted(seqs + [r.seq for r in singles]) == list(range(1, 56))
    by_id = await _n_by_row_id(db, tenant)
    assert [by_id[r.id] for r in many] == list(range(50))
    assert (await _chain_valid(channel, tenant)).rows_checked == 55


async def test_append_many_refuses_a_bad_row_before_queueing_any(db, tenant):
    batcher = AuditBatcher(db)
    bad = dataclasses.replace(_row(1), personal={"n": "x"})
    with pytest.raises(ValueError, match="both personal and not"):
        await batcher.append_many(tenant, [_row(0), bad])
    # Neither row was queued: the next row is the chain's first.
    assert (await batcher.append(tenant, _row(2))).seq == 1


async def test_close_fails_waiting_callers_with_unavailable(db, tenant):
    batcher = AuditBatcher(db)
    pending = [asyncio.ensure_future(batcher.append(tenant, _row(n))) for n in range(3)]
    await asyncio.sleep(0)  # the drainer starts writing
    await batcher.close()
    results = await asyncio.gather(*pending, return_exceptions=True)
    assert results and all(isinstance(r, Unavailable) for r in results)
    assert results[0].reason == "SHUTTING_DOWN"
    # Nothing half-written: the cancelled transaction rolled back.
    async with db.transaction(tenant) as con:
        assert (
            await con.fetchval("SELECT count(*) FROM audit_log WHERE tenant_id = $1", tenant) == 0
        )
