"""Each emission writes one `decision_provenance_emit` row with the right changes."""

from __future__ import annotations

from kaireon.audit.v1 import audit_pb2, audit_pb2_grpc
from tests.provenance.conftest import AFTER_CHANGE, BEFORE_CHANGE, fetch
from tests.support.server import metadata


async def _emit_rows(db, tenant):
    async with db.transaction(tenant) as con:
        return await con.fetch(
            "SELECT action, entity_type, entity_id, actor, changes, subject_id, personal "
            "FROM audit_log WHERE tenant_id = $1 AND action = 'decision_provenance_emit' "
            "ORDER BY seq",
            tenant,
        )


async def test_one_emission_row_per_bundle_with_its_figures(channel, seeded, db):
    assert await _emit_rows(db, seeded) == []
    got = await fetch(channel, seeded, AFTER_CHANGE)
    rows = await _emit_rows(db, seeded)
    assert len(rows) == 1
    row = rows[0]
    assert row["entity_type"] == "decision"
    assert row["entity_id"] == AFTER_CHANGE
    assert row["actor"] == "admin@headers"
    assert row["changes"] == {
        "digestSha256": got.digest,
        "signed": True,
        "modelCount": 2,
        "auditLogCount": 3,
    }
    # DSAR finds it through the data subject; nothing personal is stored in it.
    async with db.transaction(seeded) as con:
        customer = await con.fetchval(
            "SELECT customer_id FROM decision_trace WHERE tenant_id = $1 AND id = $2",
            seeded,
            AFTER_CHANGE,
        )
    assert row["subject_id"] == customer
    assert row["personal"] is None

    before = await fetch(channel, seeded, BEFORE_CHANGE)
    rows = await _emit_rows(db, seeded)
    assert len(rows) == 2
    assert rows[1]["changes"]["digestSha256"] == before.digest
    assert rows[1]["changes"]["auditLogCount"] == 2


async def test_chain_still_verifies_after_emissions(channel, seeded):
    for _ in range(3):
        await fetch(channel, seeded, AFTER_CHANGE)
    stub = audit_pb2_grpc.AuditServiceStub(channel)
    reply = await stub.VerifyChain(audit_pb2.VerifyChainRequest(), metadata=metadata(seeded))
    assert reply.valid
    assert reply.rows_checked == 6 + 3  # seed rows + emissions
