"""SQL of the audit transparency log (tables of migration 0113)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

# The columns a leaf is made of (audit/tlog.py `leaf_of`).
LEAF_COLUMNS = (
    "tenant_id, seq, id, action, entity_type, entity_id, entity_id_digest, actor, changes, "
    "personal_digests, subject_id_digest, created_at, prev_hash, integrity_hash"
)


async def pending_tenants(con: asyncpg.Connection, after: str, limit: int) -> list[str]:
    """Tenant keys with rows no checkpoint covers, ordered, after the key `after`."""
    rows = await con.fetch("SELECT tenant_id FROM kaireon_tlog_pending($1, $2)", after, limit)
    return [str(r["tenant_id"]) for r in rows]


async def try_lock_tenant(con: asyncpg.Connection, tenant_id: str) -> bool:
    """One integrator per tenant at a time (held until the transaction ends)."""
    got = await con.fetchval(
        "SELECT pg_try_advisory_xact_lock(hashtextextended('kaireon.tlog:' || $1, 0))", tenant_id
    )
    return bool(got)


async def load_state(con: asyncpg.Connection, tenant_id: str) -> Any:
    return await con.fetchval(
        "SELECT compact FROM audit_tlog_state WHERE tenant_id = $1", tenant_id
    )


async def save_state(con: asyncpg.Connection, tenant_id: str, size: int, compact: Any) -> None:
    await con.execute(
        """
        INSERT INTO audit_tlog_state (tenant_id, size, compact) VALUES ($1, $2, $3)
        ON CONFLICT (tenant_id) DO UPDATE
           SET size = excluded.size, compact = excluded.compact, updated_at = now()
        """,
        tenant_id,
        size,
        compact,
    )


async def rows_from(
    con: asyncpg.Connection, tenant_id: str, after_seq: int, limit: int
) -> list[asyncpg.Record]:
    rows: list[Any] = await con.fetch(
        f"SELECT {LEAF_COLUMNS} FROM audit_log WHERE tenant_id = $1 AND seq > $2 "  # noqa: S608 - constant columns
        "ORDER BY seq LIMIT $3",
        tenant_id,
        after_seq,
        limit,
    )
    return rows


async def appended_leaves(
    con: asyncpg.Connection, tenant_id: str, after_seq: int, limit: int
) -> list[asyncpg.Record]:
    """(seq, leaf_hash) of the rows after `after_seq`: the leaf hash their append
    stored (migration 0242), NULL for rows written before it."""
    rows: list[Any] = await con.fetch(
        "SELECT seq, leaf_hash FROM audit_log WHERE tenant_id = $1 AND seq > $2 "
        "ORDER BY seq LIMIT $3",
        tenant_id,
        after_seq,
        limit,
    )
    return rows


async def rows_at(
    con: asyncpg.Connection, tenant_id: str, seqs: Sequence[int]
) -> list[asyncpg.Record]:
    """The leaf columns of the rows `seqs`, in seq order."""
    rows: list[Any] = await con.fetch(
        f"SELECT {LEAF_COLUMNS} FROM audit_log WHERE tenant_id = $1 AND seq = ANY($2::bigint[]) "  # noqa: S608 - constant columns
        "ORDER BY seq",
        tenant_id,
        list(seqs),
    )
    return rows


async def insert_nodes(
    con: asyncpg.Connection, tenant_id: str, nodes: Sequence[tuple[int, int, bytes]]
) -> None:
    await con.execute(
        """
        INSERT INTO audit_tlog_node (tenant_id, level, idx, hash)
        SELECT $1, * FROM unnest($2::smallint[], $3::bigint[], $4::bytea[])
        """,
        tenant_id,
        [n[0] for n in nodes],
        [n[1] for n in nodes],
        [n[2] for n in nodes],
    )


async def fetch_nodes(
    con: asyncpg.Connection, tenant_id: str, keys: Sequence[tuple[int, int]]
) -> dict[tuple[int, int], bytes]:
    rows = await con.fetch(
        """
        SELECT n.level, n.idx, n.hash FROM audit_tlog_node n
          JOIN unnest($2::smallint[], $3::bigint[]) AS k(level, idx)
            ON n.level = k.level AND n.idx = k.idx
         WHERE n.tenant_id = $1
        """,
        tenant_id,
        [k[0] for k in keys],
        [k[1] for k in keys],
    )
    return {(int(r["level"]), int(r["idx"])): bytes(r["hash"]) for r in rows}


async def leaf_hashes(
    con: asyncpg.Connection, tenant_id: str, start: int, end: int
) -> dict[int, bytes]:
    rows = await con.fetch(
        "SELECT idx, hash FROM audit_tlog_node "
        "WHERE tenant_id = $1 AND level = 0 AND idx >= $2 AND idx < $3",
        tenant_id,
        start,
        end,
    )
    return {int(r["idx"]): bytes(r["hash"]) for r in rows}


async def insert_checkpoint(
    con: asyncpg.Connection, tenant_id: str, size: int, root: bytes, *, note: str, signed: bool
) -> None:
    await con.execute(
        "INSERT INTO audit_tlog_checkpoint (tenant_id, size, root_hash, note, signed) "
        "VALUES ($1, $2, $3, $4, $5)",
        tenant_id,
        size,
        root,
        note,
        signed,
    )


_CHECKPOINT = "SELECT size, root_hash, note, signed, created_at FROM audit_tlog_checkpoint "


async def latest_checkpoint(con: asyncpg.Connection, tenant_id: str) -> asyncpg.Record | None:
    row: Any = await con.fetchrow(
        _CHECKPOINT + "WHERE tenant_id = $1 ORDER BY size DESC LIMIT 1", tenant_id
    )
    return row


async def checkpoints_between(
    con: asyncpg.Connection, tenant_id: str, low: int, high: int
) -> list[asyncpg.Record]:
    """Every stored checkpoint with low < size <= high, smallest first."""
    rows: list[Any] = await con.fetch(
        _CHECKPOINT + "WHERE tenant_id = $1 AND size > $2 AND size <= $3 ORDER BY size",
        tenant_id,
        low,
        high,
    )
    return rows


async def checkpoint_at(
    con: asyncpg.Connection, tenant_id: str, size: int
) -> asyncpg.Record | None:
    row: Any = await con.fetchrow(
        _CHECKPOINT + "WHERE tenant_id = $1 AND size = $2", tenant_id, size
    )
    return row


async def cosignatures(con: asyncpg.Connection, tenant_id: str, size: int) -> list[str]:
    rows = await con.fetch(
        "SELECT line FROM audit_tlog_cosignature WHERE tenant_id = $1 AND size = $2 "
        "ORDER BY witness",
        tenant_id,
        size,
    )
    return [str(r["line"]) for r in rows]


async def add_cosignature(
    con: asyncpg.Connection, tenant_id: str, size: int, witness: str, line: str
) -> None:
    """Keep the witness's latest cosignature of that checkpoint (a newer timestamp replaces it)."""
    await con.execute(
        """
        INSERT INTO audit_tlog_cosignature (tenant_id, size, witness, line)
        VALUES ($1, $2, $3, $4)
        ON CONFLICT (tenant_id, size, witness)
        DO UPDATE SET line = excluded.line, created_at = now()
        """,
        tenant_id,
        size,
        witness,
        line,
    )


async def verified_size(con: asyncpg.Connection, tenant_id: str) -> int:
    value = await con.fetchval(
        "SELECT size FROM audit_tlog_verified WHERE tenant_id = $1", tenant_id
    )
    return int(value or 0)


async def save_verified(con: asyncpg.Connection, tenant_id: str, size: int) -> None:
    await con.execute(
        """
        INSERT INTO audit_tlog_verified (tenant_id, size) VALUES ($1, $2)
        ON CONFLICT (tenant_id) DO UPDATE SET size = excluded.size, verified_at = now()
        """,
        tenant_id,
        size,
    )


async def row_hash_before(con: asyncpg.Connection, tenant_id: str, seq: int) -> str | None:
    """The chain hash of row `seq` (where chain verification of later rows resumes)."""
    value = await con.fetchval(
        "SELECT integrity_hash FROM audit_log WHERE tenant_id = $1 AND seq = $2", tenant_id, seq
    )
    return None if value is None else str(value)


# The chain check also needs the plaintext columns (they must match their digests).
CHAIN_COLUMNS = (
    "tenant_id, seq, id, action, entity_type, entity_id, entity_id_digest, entity_id_salt, "
    "actor, changes, personal, personal_salts, personal_digests, prev_hash, integrity_hash, "
    "created_at, redacted_at"
)


async def chain_rows_from(
    con: asyncpg.Connection, tenant_id: str, after_seq: int, limit: int
) -> list[asyncpg.Record]:
    rows: list[Any] = await con.fetch(
        f"SELECT {CHAIN_COLUMNS} FROM audit_log WHERE tenant_id = $1 AND seq > $2 "  # noqa: S608 - constant columns
        "ORDER BY seq LIMIT $3",
        tenant_id,
        after_seq,
        limit,
    )
    return rows


async def chain_head(con: asyncpg.Connection, tenant_id: str) -> tuple[int, str]:
    row = await con.fetchrow(
        "SELECT seq, head_hash FROM audit_chain_head WHERE tenant_id = $1", tenant_id
    )
    return (int(row["seq"]), str(row["head_hash"])) if row else (0, "")


async def chain_verified(con: asyncpg.Connection, tenant_id: str) -> tuple[int, str]:
    row = await con.fetchrow(
        "SELECT seq, head_hash FROM audit_chain_verified WHERE tenant_id = $1", tenant_id
    )
    return (int(row["seq"]), str(row["head_hash"])) if row else (0, "")


async def save_chain_verified(
    con: asyncpg.Connection, tenant_id: str, seq: int, head_hash: str
) -> None:
    await con.execute(
        """
        INSERT INTO audit_chain_verified (tenant_id, seq, head_hash) VALUES ($1, $2, $3)
        ON CONFLICT (tenant_id) DO UPDATE
           SET seq = excluded.seq, head_hash = excluded.head_hash, verified_at = now()
         WHERE audit_chain_verified.seq < excluded.seq
        """,
        tenant_id,
        seq,
        head_hash,
    )
