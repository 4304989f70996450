"""A bundle's read does not grow with the tenant's emission history.

Every emission appends a `decision_provenance_emit` audit row, so a tenant's
log is mostly emission rows, and the statistics PostgreSQL planned with may
date from when it was small. The bundle statement (the body of
kaireon_provenance_bundle) is planned here as PL/pgSQL settles on it after
five calls, a generic plan, over 20,000 emission rows the statistics have not
seen, half of them the read decision's own: no node may walk them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import asyncpg

from kaireon_server.platform.db.migrate import load_migrations
from kaireon_server.provenance import repository

ROWS = 20_000
DECISION = "dec_00002_1"


def _statement() -> str:
    """The function's RETURN QUERY, with its two arguments as parameters."""
    [migration] = [m for m in load_migrations() if m.name == repository.BUNDLE_MIGRATION]
    body = migration.sql.split("RETURN QUERY", 1)[1]
    body = body[: body.index("FROM d;") + len("FROM d")]
    return body.replace("p_tenant", "$1::text").replace("p_decision_id", "$2::text")


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


async def test_a_bundle_read_touches_no_emission_row(database_url: str, seeded: str) -> None:
    owner = await asyncpg.connect(database_url)
    try:
        await owner.execute("ANALYZE audit_log")  # statistics of a small log
        async with owner.transaction():
            # Rows to be planned over only: no chain, no triggers.
            await owner.execute("SET LOCAL session_replication_role = replica")
            top = await owner.fetchval(
                "SELECT max(seq) FROM audit_log WHERE tenant_id = $1", seeded
            )
            await owner.execute(
                """
                INSERT INTO audit_log (tenant_id, seq, id, action, entity_type, entity_id,
                                       actor, changes, prev_hash, integrity_hash, created_at)
                SELECT $1, $2 + i, gen_random_uuid(), 'decision_provenance_emit', 'decision',
                       CASE WHEN i % 2 = 0 THEN $4 ELSE 'dec_00001_' || (i % 3 + 1) END,
                       'seed', '{}', 'p', 'h', timestamptz '2026-06-01' + i * interval '1 ms'
                  FROM generate_series(1, $3) i
                """,
                seeded,
                top,
                ROWS,
                DECISION,
            )
        async with owner.transaction():
            await owner.execute("SET LOCAL plan_cache_mode = force_generic_plan")
            await owner.execute("SELECT set_config('kaireon.tenant_id', $1, true)", seeded)
            await owner.execute(f"PREPARE bundle_read(text, text) AS {_statement()}")
            explained = await owner.fetchval(
                "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) EXECUTE bundle_read("
                + ", ".join("'" + v.replace("'", "''") + "'" for v in (seeded, DECISION))
                + ")"
            )
            await owner.execute("DEALLOCATE bundle_read")
    finally:
        async with owner.transaction():
            await owner.execute("SET LOCAL session_replication_role = replica")
            await owner.execute(
                "DELETE FROM audit_log WHERE tenant_id = $1 AND actor = 'seed'", seeded
            )
        await owner.close()

    plan = json.loads(explained)[0]["Plan"]
    walked = [
        (node["Node Type"], node.get("Index Name"), node.get("Rows Removed by Filter", 0))
        for node in _nodes(plan)
        if node.get("Rows Removed by Filter", 0) > 100
    ]
    assert walked == []
    # The read's pages: a few dozen, where walking the emission rows took thousands.
    assert plan["Shared Hit Blocks"] + plan["Shared Read Blocks"] < 500, plan
