"""StartRun's one-statement insert, sent as StartRun sends it (on the run lock's
connection, no transaction of its own): the view it returns without reading
back is the one get_run reads; the audit row is chained at the statement's
commit; an existing run id is refused with nothing written (no run, no node,
no audit row); checkpoints left under a new run's id are gone."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import UTC, datetime

import asyncpg

from kaireon_server.flow import repository
from kaireon_server.flow.locks import RunLock
from kaireon_server.flow.stores import CHECKPOINT_UPSERT
from kaireon_server.platform.audit_chain import AuditRow, PendingAudit
from kaireon_server.platform.db import Database

AT = datetime(2026, 12, 5, 1, 2, 3, 456789, tzinfo=UTC)
DEFINITION = {
    "name": "chain",
    "nodes": [{"id": "a", "type": "source.inline", "config": {"n": 1.5, "k": [1, "x"]}}],
    "maxConcurrency": 2,
}


def start_row(run_id: str, marker: str) -> AuditRow:
    return AuditRow(
        action="flow_run_start",
        entity_type="flow_run",
        entity_id=run_id,
        actor="test",
        changes={"marker": marker},
    )


async def insert(
    db: Database,
    tenant: str,
    run_id: str,
    *,
    name: str = "chain",
    nodes: Sequence[tuple[str, str]] = (("a", "t"),),
    marker: str = "first",
) -> repository.RunView | None:
    lock = await RunLock.try_acquire(db, tenant, run_id)
    assert lock is not None
    try:
        assert not lock.con.is_in_transaction()
        return await repository.insert_run(
            lock.con,
            tenant,
            run_id,
            name=name,
            definition=DEFINITION,
            digest="d" * 64,
            nodes=nodes,
            started_at=AT,
            audit=PendingAudit.of(tenant, [start_row(run_id, marker)]),
        )
    finally:
        await lock.release()


async def audit_markers(db: Database, tenant: str, run_id: str) -> list[str]:
    async with db.transaction(tenant, readonly=True) as con:
        rows = await con.fetch(
            "SELECT changes->>'marker' AS marker FROM audit_log "
            "WHERE tenant_id = $1 AND entity_type = 'flow_run' AND entity_id = $2 ORDER BY seq",
            tenant,
            run_id,
        )
        pending = await con.fetchval(
            "SELECT count(*) FROM audit_pending WHERE tenant_id = $1", tenant
        )
    assert pending == 0  # chained at the statement's commit, none left behind
    return [r["marker"] for r in rows]


async def test_the_returned_view_is_the_stored_run_and_its_audit_row_is_chained(
    db: Database, tenant: str
) -> None:
    run_id = f"r{secrets.token_hex(4)}"
    nodes = [("a", "source.inline"), ("b", "transform.filter"), ("c", "sink.table")]
    made = await insert(db, tenant, run_id, nodes=nodes)
    async with db.transaction(tenant) as con:
        stored = await repository.get_run(con, tenant, run_id)
    assert made is not None and made == stored
    assert [n.node_id for n in made.nodes] == ["a", "b", "c"]
    assert await audit_markers(db, tenant, run_id) == ["first"]


async def test_an_existing_run_id_is_refused_and_nothing_changes(db: Database, tenant: str) -> None:
    run_id = f"r{secrets.token_hex(4)}"
    assert await insert(db, tenant, run_id, name="first", nodes=[("a", "t")]) is not None
    refused = await insert(
        db, tenant, run_id, name="second", nodes=[("x", "t"), ("y", "t")], marker="second"
    )
    assert refused is None
    async with db.transaction(tenant) as con:
        stored = await repository.get_run(con, tenant, run_id)
    assert stored is not None and stored.name == "first"
    assert [n.node_id for n in stored.nodes] == ["a"]
    assert await audit_markers(db, tenant, run_id) == ["first"]
    # The same run id in another tenant is another run.
    other = f"t{secrets.token_hex(5)}"
    assert await insert(db, other, run_id, marker="other") is not None
    assert await audit_markers(db, other, run_id) == ["other"]


async def test_a_new_run_starts_without_the_checkpoints_left_under_its_id(
    db: Database, tenant: str
) -> None:
    run_id = f"r{secrets.token_hex(4)}"

    async def checkpoints(con: asyncpg.Connection) -> int:
        n: int = await con.fetchval(
            "SELECT count(*) FROM flow_run_checkpoint WHERE tenant_id = $1 AND run_id = $2",
            tenant,
            run_id,
        )
        return n

    async with db.transaction(tenant) as con:
        # Left by an earlier run of that id whose row is gone.
        await con.execute(CHECKPOINT_UPSERT, tenant, run_id, "a", "k" * 64, "d" * 64, 1, "on")
        assert await checkpoints(con) == 1
    assert await insert(db, tenant, run_id) is not None
    async with db.transaction(tenant) as con:
        assert await checkpoints(con) == 0
        # A refused start deletes nothing of the existing run's.
        await con.execute(CHECKPOINT_UPSERT, tenant, run_id, "a", "k" * 64, "d" * 64, 1, "on")
    assert await insert(db, tenant, run_id, marker="again") is None
    async with db.transaction(tenant) as con:
        assert await checkpoints(con) == 1
