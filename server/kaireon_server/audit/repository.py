"""SQL for reading the audit chain."""

from __future__ import annotations

from typing import Any

import asyncpg


def list_events_query(
    tenant_id: str,
    *,
    after_seq: int,
    limit: int,
    action: str | None,
    entity_type: str | None,
) -> tuple[str, list[Any]]:
    """One statement per filter combination, so each filter is an index
    condition in any plan (migration 0112 has an index for each)."""
    args: list[Any] = [tenant_id]
    where = ["tenant_id = $1"]
    if action is not None:
        args.append(action)
        where.append(f"action = ${len(args)}")
    if entity_type is not None:
        args.append(entity_type)
        where.append(f"entity_type = ${len(args)}")
    args.append(after_seq)
    where.append(f"seq > ${len(args)}")
    args.append(limit)
    sql = (
        "SELECT seq, id, action, entity_type, entity_id, entity_id_digest, actor, changes, "  # noqa: S608 - constant SQL
        "personal, personal_digests, prev_hash, integrity_hash, created_at, redacted_at "
        f"FROM audit_log WHERE {' AND '.join(where)} ORDER BY seq LIMIT ${len(args)}"
    )
    return sql, args


async def list_events(
    con: asyncpg.Connection,
    tenant_id: str,
    *,
    after_seq: int,
    limit: int,
    action: str | None,
    entity_type: str | None,
) -> list[asyncpg.Record]:
    sql, args = list_events_query(
        tenant_id, after_seq=after_seq, limit=limit, action=action, entity_type=entity_type
    )
    rows: list[Any] = await con.fetch(sql, *args)
    return rows
