"""SQL for reading the audit chain."""

from __future__ import annotations

from typing import Any

import asyncpg


async def list_events(
    con: asyncpg.Connection,
    tenant_id: str,
    *,
    after_seq: int,
    limit: int,
    action: str | None,
    entity_type: str | None,
) -> list[asyncpg.Record]:
    rows: list[Any] = await con.fetch(
        """
        SELECT seq, id, action, entity_type, entity_id, entity_id_digest, actor, changes,
               personal, personal_digests, prev_hash, integrity_hash, created_at, redacted_at
          FROM audit_log
         WHERE tenant_id = $1 AND seq > $2
           AND ($3::text IS NULL OR action = $3)
           AND ($4::text IS NULL OR entity_type = $4)
         ORDER BY seq
         LIMIT $5
        """,
        tenant_id,
        after_seq,
        action,
        entity_type,
        limit,
    )
    return rows
