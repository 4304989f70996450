"""Leaves of real audit rows (real PostgreSQL, the server's own append and redaction):
redaction never changes a leaf, and the adversarial review's attack — edit a row,
recompute every later chain hash and the chain head — which the hash chain accepts,
is caught by a checkpoint signed before it."""

from __future__ import annotations

from typing import Any

import pytest

from kaireon_client.tlog.leaf import AuditLeaf
from kaireon_client.tlog.merkle import encode_hash, inclusion_proof, root_hash
from kaireon_client.tlog.verify import EXPORT_FORMAT, VerificationError, verify_export
from kaireon_server.platform.audit_chain import (
    append_audit,
    normalise_db_row,
    redact_subject,
    verify_tenant_chain,
)
from tests.tlog.forge import rehash_chain
from tests.tlog.support import LOG_NAME, Log

_SELECT = """
SELECT tenant_id, seq, id, action, entity_type, entity_id, entity_id_digest, actor, changes,
       personal_digests, prev_hash, integrity_hash, created_at
  FROM audit_log WHERE tenant_id = $1 ORDER BY seq
"""


async def _append(db: Any, tenant: str, n: int) -> None:
    for i in range(n):
        async with db.transaction(tenant) as con:
            await append_audit(
                con,
                tenant,
                action="consent_changed",
                entity_type="customer",
                entity_id=f"cust_{i:03d}",
                actor="operator",
                changes={"i": i},
                personal={"email": f"p{i}@example.com"},
                entity_id_is_personal=True,
                subject_id=f"cust_{i:03d}",
            )


async def _rows(db: Any, tenant: str) -> list[dict[str, Any]]:
    async with db.owner_connection() as con:
        return [normalise_db_row(rec) for rec in await con.fetch(_SELECT, tenant)]


def _leaves(rows: list[dict[str, Any]]) -> list[AuditLeaf]:
    return [AuditLeaf.from_row(row) for row in rows]


async def test_redaction_never_changes_a_leaf(db: Any, tenant: str) -> None:
    await _append(db, tenant, 4)
    before = _leaves(await _rows(db, tenant))
    assert [leaf.seq for leaf in before] == [1, 2, 3, 4]
    # The personal entity id is in the leaf only through its digest.
    assert all(leaf.entity_id is None and leaf.entity_id_digest for leaf in before)
    assert b"cust_001" not in before[1].canonical() and b"p1@" not in before[1].canonical()
    async with db.transaction(tenant) as con:
        assert await redact_subject(con, tenant, "cust_001") == 1
    after = _leaves(await _rows(db, tenant))
    assert [leaf.canonical() for leaf in after] == [leaf.canonical() for leaf in before]


async def test_a_rehashed_chain_passes_verifychain_but_not_the_signed_checkpoint(
    db: Any, tenant: str
) -> None:
    await _append(db, tenant, 12)
    log = Log(tenant=tenant)
    log.leaves = _leaves(await _rows(db, tenant))
    signed = log.signed()  # the checkpoint witnesses cosigned before the attack

    # The attack of the review: with the database owner's access, edit row 10,
    # recompute the hashes of rows 10.. and move the chain head.
    async with db.owner_connection() as con, con.transaction():
        await con.execute(
            "UPDATE audit_log SET changes = '{\"i\": 999}'::jsonb "
            "WHERE tenant_id = $1 AND seq = 10",
            tenant,
        )
        await rehash_chain(con, tenant)
        assert (await verify_tenant_chain(con, tenant)).valid  # the chain cannot tell

    tampered = _leaves(await _rows(db, tenant))
    hashes = [leaf.leaf_hash() for leaf in tampered]
    assert root_hash(hashes) != log.checkpoint().root_hash
    keys = ([log.signer.verifier()], [w.verifier() for w in log.witnesses])

    def export(proof_hashes: list[bytes]) -> dict[str, Any]:
        return {
            "format": EXPORT_FORMAT,
            "checkpoint": signed,
            "start": 0,
            "entries": [
                {
                    "leaf": leaf.to_json(),
                    "inclusionProof": [
                        encode_hash(h) for h in inclusion_proof(proof_hashes, i, len(proof_hashes))
                    ],
                }
                for i, leaf in enumerate(tampered)
            ],
        }

    # With the proofs issued before the attack (receipts, earlier exports), the
    # edited row itself is named.
    with pytest.raises(VerificationError, match="leaf index 9: row or its inclusion proof") as e:
        verify_export(export(log.hashes()), *keys)
    assert e.value.index == 9
    # Proofs recomputed over the rewritten tree all miss the signed root: refused too.
    with pytest.raises(VerificationError, match="does not match the checkpoint"):
        verify_export(export(hashes), *keys)
    assert log.origin == f"{LOG_NAME}/audit/{tenant}"
