"""Round trips to PostgreSQL per bundle, counted on the wire (issue #22).

A TCP proxy between the pool and PostgreSQL counts what the client sends before
it waits for an answer (Sync, simple Query, ...). The read of a bundle is one
round trip (it was five: BEGIN, the tenant setting, the statement, COMMIT, the
pool's reset); the emission audit row adds the group-committing writer's
statement (migration 0238: the tenant setting, chain-head lock, insert and
commit in one; it was a transaction of six), shared by every row of its batch.
"""

from __future__ import annotations

import asyncio

import pytest

from kaireon_server.platform.audit_chain import (
    AuditBatcher,
    AuditRow,
    insert_rows,
    insert_rows_alone,
)
from kaireon_server.platform.auth import Identity
from kaireon_server.platform.errors import NotFound
from kaireon_server.provenance.cache import BundleCache
from kaireon_server.provenance.emit import Emission, read_rows
from tests.provenance.conftest import AFTER_CHANGE, BEFORE_CHANGE, admin, emitter_on

READ_ROUND_TRIPS = 1
# A lone emission's audit row: its batch is itself.
AUDIT_ROUND_TRIPS = 1


async def test_a_bundle_read_is_one_round_trip(counted_pool, seeded) -> None:
    db, proxy = counted_pool
    cache = BundleCache()
    # Warm: the connection prepares the statement, the cache hashes the model states.
    for decision_id in (BEFORE_CHANGE, AFTER_CHANGE):
        await read_rows(db, seeded, decision_id, cache)
    before = proxy.round_trips
    reads = 6
    for i in range(reads):
        rows, _ = await read_rows(db, seeded, (BEFORE_CHANGE, AFTER_CHANGE)[i % 2], cache)
        assert rows.decision.id == (BEFORE_CHANGE, AFTER_CHANGE)[i % 2]
    assert proxy.round_trips - before == reads * READ_ROUND_TRIPS


async def test_a_connection_read_without_reset_leaves_no_tenant_behind(
    counted_pool, seeded
) -> None:
    """The next user of the connection (no reset query ran) sees no tenant set."""
    db, _ = counted_pool
    await read_rows(db, seeded, AFTER_CHANGE, BundleCache())
    async with db.connection() as con:
        assert not await con.fetchval("SELECT current_setting('kaireon.tenant_id', true)")
        assert await con.fetchval("SELECT count(*) FROM decision_trace") == 0


async def test_an_emission_is_the_read_plus_its_audit_batch(
    counted_pool, seeded, server_env: dict[str, str]
) -> None:
    db, proxy = counted_pool
    identity = admin(seeded)
    async with emitter_on(db, server_env) as emitter:
        # Warm: the first emission builds, the second keeps the bundle (stored.py).
        for _ in range(2):
            await emitter.emit(identity, AFTER_CHANGE)
        before = proxy.round_trips
        emission = await emitter.emit(identity, AFTER_CHANGE)
        spent = proxy.round_trips - before
    assert emission.audit_event_id
    assert spent == READ_ROUND_TRIPS + AUDIT_ROUND_TRIPS, spent


async def test_concurrent_emissions_of_a_tenant_share_one_read(
    counted_pool, seeded, server_env: dict[str, str]
) -> None:
    """Emissions that arrive while a read is in flight are read together: eight
    concurrent calls (two decisions, one of them asked for six times, and an id
    that does not exist) cost one read statement and their audit batches, not
    eight reads; each caller still gets its own answer and its own audit row."""
    db, proxy = counted_pool
    identity = admin(seeded)
    asked = [AFTER_CHANGE] * 6 + [BEFORE_CHANGE, "dec_does_not_exist"]
    async with emitter_on(db, server_env) as emitter:
        for decision_id in (AFTER_CHANGE, BEFORE_CHANGE) * 2:  # built, then kept
            await emitter.emit(identity, decision_id)
        before = proxy.round_trips
        answers = await asyncio.gather(
            *(emitter.emit(identity, d) for d in asked), return_exceptions=True
        )
        spent = proxy.round_trips - before
    *after, other, missing = answers
    assert isinstance(missing, NotFound)
    assert all(isinstance(a, Emission) for a in (*after, other)), answers
    assert {a.bundle.digest_sha256 for a in after} == {after[0].bundle.digest_sha256}
    assert other.bundle.digest_sha256 != after[0].bundle.digest_sha256
    assert len({a.audit_event_id for a in (*after, other)}) == 7
    # One read for the eight, and the seven audit rows in one or two batches.
    assert spent <= READ_ROUND_TRIPS + 2 * AUDIT_ROUND_TRIPS, spent


async def test_an_audit_batch_leaves_no_tenant_behind(counted_pool, seeded) -> None:
    """The batch's statement sets its tenant locally: the connection goes back to
    the pool without a reset, and its next user sees no tenant and no row."""
    db, proxy = counted_pool
    audit = AuditBatcher(db)
    identity = Identity(tenant_id=seeded, role="admin", subject="admin@test")
    try:
        rows = [
            AuditRow(action="batch_test", entity_type="test", entity_id=str(i), actor="tester")
            for i in range(3)
        ]
        await audit.append(identity.tenant_id, rows[0])  # warm: the statement is prepared
        before = proxy.round_trips
        records = await asyncio.gather(*(audit.append(identity.tenant_id, r) for r in rows))
        spent = proxy.round_trips - before
    finally:
        await audit.close()
    assert len({r.seq for r in records}) == 3
    assert 1 <= spent <= 3, spent  # one statement per batch, however the rows were batched
    async with db.connection() as con:
        assert not await con.fetchval("SELECT current_setting('kaireon.tenant_id', true)")
        assert await con.fetchval("SELECT count(*) FROM audit_log") == 0
    async with db.transaction(seeded, readonly=True) as con:
        stored = await con.fetch(
            "SELECT seq, integrity_hash FROM audit_log WHERE tenant_id = $1 "
            "AND action = 'batch_test' ORDER BY seq",
            seeded,
        )
    assert [(r["seq"], r["integrity_hash"]) for r in stored][1:] == sorted(
        (r.seq, r.integrity_hash) for r in records
    )


async def test_a_statement_of_its_own_refuses_to_run_inside_a_transaction(db, seeded) -> None:
    """insert_rows_alone commits by itself: inside a caller's transaction it would
    not, so it refuses and writes nothing; insert_rows refuses the converse."""
    row = AuditRow(action="batch_test", entity_type="test", entity_id="x", actor="tester")
    async with db.transaction(seeded) as con:
        with pytest.raises(RuntimeError, match="not inside a transaction"):
            await insert_rows_alone(con, seeded, [row])
    async with db.single_statements() as con:
        with pytest.raises(RuntimeError, match="inside the caller's transaction"):
            await insert_rows(con, seeded, [row])
    async with db.transaction(seeded, readonly=True) as con:
        written = await con.fetchval(
            "SELECT count(*) FROM audit_log WHERE tenant_id = $1 AND action = 'batch_test'",
            seeded,
        )
    assert written == 0
