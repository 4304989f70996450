"""A bundle's read does not grow with the tenant's emission history.

Every emission appends a `decision_provenance_emit` audit row, so a tenant's
log is mostly emission rows, and the statistics PostgreSQL planned with may
date from when it was small. The bundle statement (the body of
kaireon_provenance_bundle) is planned here as PL/pgSQL settles on it after
five calls, a generic plan, over 20,000 emission rows the statistics have not
seen (emissions of 5,000 other decisions): no node may walk them. So is the
probe of whether the decision was emitted before (a second emission keeps the
bundle).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import pytest

from kaireon_server.demo.seed import seed_tenant
from kaireon_server.platform.config import Settings
from kaireon_server.platform.db import connect_database
from kaireon_server.platform.db.migrate import load_migrations
from kaireon_server.provenance import repository
from tests.provenance.conftest import SMALL_SEED
from tests.support.pg import create_database, drop_database

ROWS = 20_000
DECISION = "dec_00002_1"


def _migration(name: str) -> str:
    [migration] = [m for m in load_migrations() if m.name == name]
    return migration.sql


def _parameters(sql: str) -> str:
    return sql.replace("p_tenant", "$1::text").replace("p_decision_id", "$2::text")


def _bundle_statement() -> str:
    """kaireon_provenance_bundle's RETURN QUERY."""
    body = _migration(repository.BUNDLE_MIGRATION).split("RETURN QUERY", 1)[1]
    return _parameters(body[: body.index("FROM d;") + len("FROM d")])


def _emitted_probe() -> str:
    """kaireon_provenance_emissions's "emitted before?" EXISTS."""
    body = _migration("0240_provenance_emissions_in_one_call.sql").replace("d.id", "p_decision_id")
    start = body.index("EXISTS (SELECT 1 FROM audit_log a")
    return "SELECT " + _parameters(
        body[start : body.index("'decision_provenance_emit')", start) + 27]
    )


STATEMENTS = {"bundle": _bundle_statement, "emitted": _emitted_probe}


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


@pytest.fixture(scope="module")
async def small_log(pg_admin_dsn: str) -> AsyncIterator[tuple[str, str]]:
    """(database, tenant): a database of this module's own, so that its
    statistics are those of one small tenant, not of every other test's rows."""
    dsn = await create_database(pg_admin_dsn, prefix="kaireon_history")
    db = await connect_database(
        Settings.from_env({"DATABASE_URL": dsn, "KAIREON_TRUST_HEADERS": "true"})
    )
    try:
        await seed_tenant(db, "history", SMALL_SEED)
    finally:
        await db.close()
    yield dsn, "history"
    await drop_database(pg_admin_dsn, dsn)


async def _add_emission_rows(owner: asyncpg.Connection, tenant: str) -> None:
    """ROWS emission rows of 5,000 other decisions, with no ANALYZE after them:
    rows to be planned over only (no chain, no triggers)."""
    async with owner.transaction():
        await owner.execute("SET LOCAL session_replication_role = replica")
        top = await owner.fetchval(
            "SELECT coalesce(max(seq), 0) FROM audit_log WHERE tenant_id = $1", tenant
        )
        await owner.execute(
            """
            INSERT INTO audit_log (tenant_id, seq, id, action, entity_type, entity_id,
                                   actor, changes, prev_hash, integrity_hash, created_at)
            SELECT $1, $2 + i, gen_random_uuid(), 'decision_provenance_emit', 'decision',
                   'dec_' || (i % 5000),
                   'history-test', '{}', 'p', 'h', timestamptz '2026-06-01' + i * interval '1 ms'
              FROM generate_series(1, $3) i
            """,
            tenant,
            top,
            ROWS,
        )


async def _remove_emission_rows(owner: asyncpg.Connection, tenant: str) -> None:
    async with owner.transaction():
        await owner.execute("SET LOCAL session_replication_role = replica")
        await owner.execute(
            "DELETE FROM audit_log WHERE tenant_id = $1 AND actor = 'history-test'", tenant
        )


def _walked(plan: dict[str, Any]) -> list[tuple[str, str | None, int]]:
    """The nodes that filtered out more than 100 rows."""
    return [
        (node["Node Type"], node.get("Index Name"), node.get("Rows Removed by Filter", 0))
        for node in _nodes(plan)
        if node.get("Rows Removed by Filter", 0) > 100
    ]


@pytest.mark.parametrize("statement", sorted(STATEMENTS))
async def test_a_bundle_read_touches_no_emission_row(
    small_log: tuple[str, str], statement: str
) -> None:
    database_url, seeded = small_log
    owner = await asyncpg.connect(database_url)
    try:
        await owner.execute("ANALYZE audit_log")  # statistics of a small log
        await _add_emission_rows(owner, seeded)
        async with owner.transaction():
            await owner.execute("SET LOCAL plan_cache_mode = force_generic_plan")
            await owner.execute("SELECT set_config('kaireon.tenant_id', $1, true)", seeded)
            await owner.execute(f"PREPARE bundle_read(text, text) AS {STATEMENTS[statement]()}")
            explained = await owner.fetchval(
                "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) EXECUTE bundle_read("
                + ", ".join("'" + v.replace("'", "''") + "'" for v in (seeded, DECISION))
                + ")"
            )
            await owner.execute("DEALLOCATE bundle_read")
    finally:
        await _remove_emission_rows(owner, seeded)
        await owner.close()

    plan = json.loads(explained)[0]["Plan"]
    assert _walked(plan) == []
    # The read's pages: a few dozen, where walking the emission rows took thousands.
    assert plan["Shared Hit Blocks"] + plan["Shared Read Blocks"] < 500, plan


async def test_a_plan_made_while_the_log_was_small_does_not_walk_it_once_grown(
    small_log: tuple[str, str],
) -> None:
    """A session keeps its plans of the functions' statements until an ANALYZE:
    planned while audit_log was a page or two (where a sequential scan can be
    the cheapest), they must still look rows up by index once it holds ROWS
    more. The function's pages, read in the same session, stay few.

    The sequential scans seen on PostgreSQL 15 under perf/run (125 ms a bundle)
    did not come back in this small database, so the test also holds the cure in
    place: migration 0235's `enable_seqscan = off` on each function (a later
    CREATE OR REPLACE FUNCTION without it would drop it)."""
    database_url, seeded = small_log
    owner = await asyncpg.connect(database_url)
    try:
        configured = await owner.fetch(
            "SELECT proname, proconfig FROM pg_proc WHERE proname = ANY($1::text[])",
            [
                "kaireon_provenance_bundle",
                "kaireon_provenance_emissions",
                "kaireon_provenance_keep",
            ],
        )
        assert len(configured) == 3
        for function in configured:
            assert "enable_seqscan=off" in (function["proconfig"] or []), function["proname"]
        await owner.execute("ANALYZE audit_log")
        for _ in range(8):  # past PL/pgSQL's five custom plans: the kept generic one
            async with owner.transaction():
                await owner.fetch(repository.BUNDLE_SQL, seeded, DECISION)
        await _add_emission_rows(owner, seeded)
        async with owner.transaction():
            explained = await owner.fetchval(
                "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) "
                + repository.BUNDLE_SQL.replace("$1", "'" + seeded + "'").replace(
                    "$2", "'" + DECISION + "'"
                )
            )
    finally:
        await _remove_emission_rows(owner, seeded)
        await owner.close()
    plan = json.loads(explained)[0]["Plan"]
    # The function scan's buffers include every statement run inside it.
    assert plan["Shared Hit Blocks"] + plan["Shared Read Blocks"] < 500, plan
