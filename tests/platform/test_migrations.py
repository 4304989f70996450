"""Migrations: applied once, recorded, and a second run changes nothing."""

from __future__ import annotations

import asyncpg

from kaireon_server.platform.db.migrate import apply_migrations, load_migrations

SCHEMA_QUERY = """
SELECT table_name, column_name, data_type, is_nullable, column_default
  FROM information_schema.columns WHERE table_schema = 'public'
 UNION ALL
SELECT tablename, indexname, indexdef, '', '' FROM pg_indexes WHERE schemaname = 'public'
 ORDER BY 1, 2
"""


async def test_second_run_changes_nothing(database_url: str, app) -> None:
    con = await asyncpg.connect(database_url)
    try:
        before = [tuple(r) for r in await con.fetch(SCHEMA_QUERY)]
        applied = await apply_migrations(con)
        after = [tuple(r) for r in await con.fetch(SCHEMA_QUERY)]
        recorded = await con.fetch(
            "SELECT version, checksum FROM schema_migrations ORDER BY version"
        )
    finally:
        await con.close()
    assert applied == []
    assert before == after
    assert [r["version"] for r in recorded] == [m.version for m in load_migrations()]
    assert [r["checksum"] for r in recorded] == [m.checksum for m in load_migrations()]


async def test_every_table_leads_with_tenant_id(database_url: str, app) -> None:
    con = await asyncpg.connect(database_url)
    try:
        rows = await con.fetch(
            """
            SELECT c.table_name, c.column_name FROM information_schema.columns c
              JOIN information_schema.tables t USING (table_schema, table_name)
             WHERE c.table_schema = 'public' AND c.ordinal_position = 1
               AND t.table_type = 'BASE TABLE' AND c.table_name <> 'schema_migrations'
            """
        )
    finally:
        await con.close()
    offenders = sorted(r["table_name"] for r in rows if r["column_name"] != "tenant_id")
    assert rows and offenders == []


async def test_customer_tables_are_indexed_by_tenant_and_customer(database_url: str, app) -> None:
    con = await asyncpg.connect(database_url)
    try:
        tables = await con.fetch(
            "SELECT table_name FROM information_schema.columns "
            "WHERE table_schema = 'public' AND column_name = 'customer_id' "
            "AND table_name NOT LIKE 'ds\\_%'"
        )
        indexes = await con.fetch(
            "SELECT tablename, indexdef FROM pg_indexes WHERE schemaname = 'public'"
        )
    finally:
        await con.close()
    missing = []
    for t in tables:
        name = t["table_name"]
        defs = [i["indexdef"] for i in indexes if i["tablename"] == name]
        if not any("(tenant_id, customer_id" in d for d in defs):
            missing.append(name)
    assert tables and missing == []


async def test_dedicated_connection_has_json_codecs(db) -> None:
    con = await db.dedicated_connection()
    try:
        assert await con.fetchval("SELECT $1::jsonb", {"a": [1, 2]}) == {"a": [1, 2]}
    finally:
        await con.close()
