"""A rewrite of the stored tree along with the rows (`root_mismatch`) names the first
bad row: the one after the last signed checkpoint the re-hashed rows still reproduce."""

from __future__ import annotations

import grpc

from kaireon.audit.v1 import audit_pb2, audit_pb2_grpc
from kaireon_server.audit import tlog
from kaireon_server.audit import tlog_repository as repo
from kaireon_server.platform.audit_chain import append_audit
from kaireon_server.platform.db import Database
from tests.support.server import metadata
from tests.tlog import test_evidence_proofs as evidence
from tests.tlog.forge import rehash_chain

# The signed server (no integrator of its own) of the evidence tests, one per module.
keys = evidence.keys
env_of = evidence.env_of
evidence_app = evidence.evidence_app
app_db = evidence.app_db
channel = evidence.channel
integrator = evidence.integrator


async def _append_one(db: Database, tenant: str, i: int) -> None:
    async with db.transaction(tenant) as con:
        await append_audit(
            con,
            tenant,
            action="consent_changed",
            entity_type="customer",
            entity_id=f"cust_{i:03d}",
            actor="operator",
            changes={"i": i},
            entity_id_is_personal=True,
            subject_id=f"cust_{i:03d}",
        )


async def _verify(channel: grpc.aio.Channel, tenant: str) -> audit_pb2.VerifyLogResponse:
    stub = audit_pb2_grpc.AuditServiceStub(channel)
    messages = [
        m
        async for m in stub.StreamVerifyLog(
            audit_pb2.StreamVerifyLogRequest(), metadata=metadata(tenant)
        )
    ]
    return messages[-1].result


async def test_a_rewritten_tree_names_the_first_bad_row(
    channel: grpc.aio.Channel, app_db: Database, tenant: str, integrator: tlog.Integrator
) -> None:
    # One checkpoint per row (0..7), then a batch of three rows in one checkpoint.
    for i in range(8):
        await _append_one(app_db, tenant, i)
        await integrator.integrate(tenant)
    for i in range(8, 11):
        await _append_one(app_db, tenant, i)
    await integrator.integrate(tenant)
    assert (await _verify(channel, tenant)).valid

    async def rewrite(seq: int) -> None:
        # The owner edits a row, rehashes the chain, and stores the edited row's leaf
        # hash in the tree: rows, chain and leaves agree; the signed roots do not.
        async with app_db.owner_connection() as con, con.transaction():
            await con.execute(
                "UPDATE audit_log SET changes = '{\"i\": 999}'::jsonb "
                "WHERE tenant_id = $1 AND seq = $2",
                tenant,
                seq,
            )
            await rehash_chain(con, tenant)
            row = await con.fetchrow(
                f"SELECT {repo.LEAF_COLUMNS} FROM audit_log WHERE tenant_id = $1 AND seq = $2",
                tenant,
                seq,
            )
            await con.execute(
                "UPDATE audit_tlog_node SET hash = $3 WHERE tenant_id = $1 AND level = 0 "
                "AND idx = $2",
                tenant,
                seq - 1,
                tlog.leaf_of(row).leaf_hash(),
            )

    await rewrite(10)
    result = await _verify(channel, tenant)
    assert (result.valid, result.reason) == (False, "root_mismatch")
    # Row 10 is in the batch of rows 9..11 (one checkpoint): the batch's first is named.
    assert result.first_invalid_seq == 9 and result.first_invalid_id

    await rewrite(5)
    result = await _verify(channel, tenant)
    assert (result.reason, result.first_invalid_seq) == ("root_mismatch", 5)
