"""Round trips to PostgreSQL per bundle, counted on the wire (issue #22).

A TCP proxy between the pool and PostgreSQL counts what the client sends before
it waits for an answer (Sync, simple Query, ...). The read of a bundle is one
round trip (it was five: BEGIN, the tenant setting, the statement, COMMIT, the
pool's reset); the emission audit row adds the group-committing writer's
transaction (BEGIN, the tenant setting, chain-head lock, insert, COMMIT, reset),
shared by every row of its batch.
"""

from __future__ import annotations

from kaireon_server.platform.audit_chain import AuditBatcher
from kaireon_server.platform.auth import Identity
from kaireon_server.platform.build_identity import BuildEnv
from kaireon_server.platform.signing import signer_from_env
from kaireon_server.provenance.cache import BundleCache
from kaireon_server.provenance.emit import ProvenanceEmitter, read_rows, system_clock
from tests.provenance.conftest import AFTER_CHANGE, BEFORE_CHANGE

READ_ROUND_TRIPS = 1
# A lone emission's audit row: its batch is itself.
AUDIT_ROUND_TRIPS = 6


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
    audit = AuditBatcher(db)
    emitter = ProvenanceEmitter(
        db=db,
        signer=signer_from_env(server_env),
        build=BuildEnv.from_env({}),
        clock=system_clock(),
        audit=audit,
    )
    identity = Identity(tenant_id=seeded, role="admin", subject="admin@test")
    try:
        # Warm: the first emission builds, the second keeps the bundle (stored.py).
        for _ in range(2):
            await emitter.emit(identity, AFTER_CHANGE)
        before = proxy.round_trips
        emission = await emitter.emit(identity, AFTER_CHANGE)
        spent = proxy.round_trips - before
    finally:
        await audit.close()
    assert emission.audit_event_id
    assert spent <= READ_ROUND_TRIPS + AUDIT_ROUND_TRIPS, spent
