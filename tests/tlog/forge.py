"""What a forger with the database owner's access does to the audit rows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kaireon_client.audit_chain import integrity_hash
from kaireon_server.platform.audit_chain import normalise_db_row


async def rehash_chain(con: Any, tenant: str) -> None:
    """Make the legacy hash chain match the rows as they now are, and move the
    chain head to its last row."""
    prev = ""
    for rec in await con.fetch("SELECT * FROM audit_log WHERE tenant_id = $1 ORDER BY seq", tenant):
        row = normalise_db_row(rec)
        row["prevHash"] = prev
        prev = integrity_hash(row)
        await con.execute(
            "UPDATE audit_log SET prev_hash = $3, integrity_hash = $4 "
            "WHERE tenant_id = $1 AND seq = $2",
            tenant,
            rec["seq"],
            row["prevHash"],
            prev,
        )
    await con.execute(
        "UPDATE audit_chain_head SET seq = (SELECT coalesce(max(seq), 0) FROM audit_log "
        "WHERE tenant_id = $1), head_hash = $2 WHERE tenant_id = $1",
        tenant,
        prev,
    )


async def drop_leaf_hashes(con: Any, tenant: str, seqs: Sequence[int] | None = None) -> None:
    """Drop the leaf hashes the rows' appends stored (all, or the rows `seqs`),
    so they are made from the rows again. An UPDATE keeps a row's leaf hash
    (migration 0242's trigger), so the trigger goes first."""
    await con.execute("ALTER TABLE audit_log DISABLE TRIGGER audit_log_subject_digest")
    await con.execute(
        "UPDATE audit_log SET leaf_hash = NULL WHERE tenant_id = $1 "
        "AND ($2::bigint[] IS NULL OR seq = ANY($2::bigint[]))",
        tenant,
        None if seqs is None else list(seqs),
    )
    await con.execute("ALTER TABLE audit_log ENABLE TRIGGER audit_log_subject_digest")
