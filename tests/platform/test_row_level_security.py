"""Row-level security (migration 0100): the pool's role sees and writes only the
tenant its transaction names, and cannot switch the policies off."""

from __future__ import annotations

import ast
import re
import secrets

import asyncpg
import pytest

from kaireon_server.app import App
from kaireon_server.platform.config import Settings
from kaireon_server.platform.db import Database
from kaireon_server.platform.db.database import APP_ROLE, app_role_dsn, connect_database
from kaireon_server.platform.db.dynamic_tables import secure_dynamic_tables
from kaireon_server.platform.errors import ConfigurationError
from kaireon_server.provenance import repository
from tests.support.server import ROOT


def _migration_tables() -> set[str]:
    """Every table the migrations create (tests create tables of their own)."""
    folder = ROOT / "server" / "kaireon_server" / "platform" / "db" / "migrations"
    pattern = re.compile(r"CREATE TABLE (?:IF NOT EXISTS )?([a-z_]+)", re.IGNORECASE)
    return {m for f in folder.glob("*.sql") for m in pattern.findall(f.read_text())}


async def _tenant_tables(owner: asyncpg.Connection) -> list[str]:
    """The migrations' tenant tables and every dynamic ds_* table with a tenant_id."""
    rows = await owner.fetch(
        r"""
        SELECT c.relname FROM pg_class c
          JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'public'
          JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id'
         WHERE c.relkind IN ('r', 'p')
           AND (c.relname = ANY($1::text[]) OR c.relname LIKE 'ds\_%')
         ORDER BY 1
        """,
        sorted(_migration_tables()),
    )
    return [r["relname"] for r in rows]


async def test_every_tenant_table_has_a_policy(database_url: str, app: App, tenant: str) -> None:
    owner = await asyncpg.connect(database_url)
    late = f"ds_{tenant}_after_start"
    try:
        # A dynamic table created after start-up, then the start-up pass (run by
        # every server start): it must be covered like the migrations' tables.
        await owner.execute(f"CREATE TABLE {late} (tenant_id text NOT NULL, v int)")
        # As if created where migration 0102's event trigger could not be installed.
        await owner.execute(f"DROP POLICY tenant_isolation ON {late}")
        await owner.execute(f"ALTER TABLE {late} DISABLE ROW LEVEL SECURITY")
        await secure_dynamic_tables(owner)
        tables = await _tenant_tables(owner)
        assert late in tables
        rows = await owner.fetch(
            """
            SELECT c.relname, c.relrowsecurity, p.polname, pg_get_expr(p.polqual, p.polrelid) AS qual,
                   pg_get_expr(p.polwithcheck, p.polrelid) AS check
              FROM pg_class c LEFT JOIN pg_policy p ON p.polrelid = c.oid
             WHERE c.relname = ANY($1::text[])
            """,
            tables,
        )
    finally:
        await owner.execute(f"DROP TABLE IF EXISTS {late}")
        await owner.close()
    # All 26 of the schema plus the dynamic tables (a new table with tenant_id and
    # no policy fails here; so would a second, OR-ed policy on one of them).
    assert len(tables) >= 27
    assert len(rows) == len(tables)
    by_table = {r["relname"]: r for r in rows}
    assert set(by_table) == set(tables)
    for table, row in by_table.items():
        assert row["relrowsecurity"], table
        assert row["polname"] == "tenant_isolation", table
        for expr in (row["qual"], row["check"]):
            assert "current_setting('kaireon.tenant_id'::text, true)" in expr, (table, expr)


async def test_the_pool_runs_as_a_role_that_cannot_bypass(db: Database) -> None:
    async with db.connection() as con:
        row = await con.fetchrow(
            "SELECT current_user AS name, rolsuper, rolbypassrls FROM pg_roles"
            " WHERE rolname = current_user"
        )
        assert row is not None
        assert (row["name"], row["rolsuper"], row["rolbypassrls"]) == (APP_ROLE, False, False)
        # Not the owner: it can neither disable the policies nor create its own tables.
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await con.execute("ALTER TABLE audit_log DISABLE ROW LEVEL SECURITY")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await con.execute("CREATE TABLE kaireon_escape (tenant_id text)")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await con.execute("SET ROLE postgres")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await con.fetch("SELECT * FROM schema_migrations")


async def test_without_the_tenant_setting_the_role_sees_and_writes_nothing(
    database_url: str, db: Database, tenant: str
) -> None:
    async with db.transaction(tenant) as con:
        await con.execute(
            "INSERT INTO offer (tenant_id, offer_id, version, category_id, name, valid_from)"
            " VALUES ($1, 'OFFER_RLS', 1, 'c', 'rls', now())",
            tenant,
        )
    # A fresh connection as the application role, exactly as the server makes them.
    con = await asyncpg.connect(app_role_dsn(database_url))
    try:
        assert await con.fetchval("SELECT current_user") == APP_ROLE
        # The tenant's row is there (the owner sees it below), yet a query with
        # no tenant set sees no row of any table, even naming the tenant.
        for table in ("offer", "audit_log", "audit_chain_head"):
            assert await con.fetchval(f"SELECT count(*) FROM {table}") == 0, table
        assert await con.fetchval("SELECT count(*) FROM offer WHERE tenant_id = $1", tenant) == 0
        # Another tenant's setting: still nothing of this tenant.
        async with con.transaction():
            await con.execute("SELECT set_config('kaireon.tenant_id', 'someone-else', true)")
            assert (
                await con.fetchval("SELECT count(*) FROM offer WHERE tenant_id = $1", tenant) == 0
            )
            assert await con.execute("DELETE FROM offer WHERE tenant_id = $1", tenant) == "DELETE 0"
            assert (
                await con.execute("UPDATE offer SET name = 'x' WHERE tenant_id = $1", tenant)
                == "UPDATE 0"
            )
            # Writing a row for another tenant is refused by the policy's WITH CHECK.
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await con.execute(
                    "INSERT INTO offer (tenant_id, offer_id, version, category_id, name,"
                    " valid_from) VALUES ($1, 'OFFER_X', 1, 'c', 'x', now())",
                    tenant,
                )
        # The setting is transaction-local: gone after the transaction.
        async with con.transaction():
            await con.execute("SELECT set_config('kaireon.tenant_id', $1, true)", tenant)
            assert await con.fetchval("SELECT count(*) FROM offer") == 1
        assert await con.fetchval("SELECT count(*) FROM offer") == 0
    finally:
        await con.close()
    owner = await asyncpg.connect(database_url)
    try:
        row = await owner.fetchrow(
            "SELECT name FROM offer WHERE tenant_id = $1 AND offer_id = 'OFFER_RLS'", tenant
        )
        assert row is not None and row["name"] == "rls"
    finally:
        await owner.close()


async def test_maintenance_functions_return_keys_only(db: Database) -> None:
    """The workers' cross-tenant reads go through narrow SECURITY DEFINER functions."""
    async with db.connection() as con:
        rows = await con.fetch(
            """
            SELECT p.proname, p.prosecdef, pg_get_function_result(p.oid) AS result
              FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
             WHERE n.nspname = 'public' AND p.prosecdef
             ORDER BY 1
            """
        )
    assert [(r["proname"], r["result"]) for r in rows] == [
        ("kaireon_dsar_exhausted_job", "TABLE(tenant_id text, id uuid)"),
        ("kaireon_dsar_next_job", "TABLE(tenant_id text, id uuid)"),
        ("kaireon_flow_purge_checkpoints", "bigint"),
        ("kaireon_flow_running_runs", "TABLE(tenant_id text, run_id text, attempt integer)"),
        # Migration 0120, the metrics sampler: counts and ages only, no key at all.
        (
            "kaireon_metrics_sample",
            "TABLE(kind text, state text, n bigint, age_seconds double precision)",
        ),
        # Migration 0151, processor delivery: claims (and leases) one due outbox row.
        ("kaireon_processor_claim_delivery", "TABLE(tenant_id text, id uuid)"),
        # Migration 0243: when the next claimable one is due, a number of seconds.
        ("kaireon_processor_next_due_seconds", "SETOF double precision"),
        # Migration 0113, the audit log integrator: tenant keys with rows to integrate.
        ("kaireon_tlog_pending", "TABLE(tenant_id text)"),
        # Migration 0172: the same, a page after a tenant key.
        ("kaireon_tlog_pending", "TABLE(tenant_id text)"),
    ]


async def test_the_provenance_read_function_keeps_to_its_tenant(db: Database) -> None:
    """kaireon_provenance_bundle (migration 0160) runs as the caller (not SECURITY
    DEFINER, so absent from the list above), under the policies, for the tenant
    of its argument only: tenant B never reads A's decision through it, and the
    setting it makes ends with the statement."""
    a, b = (f"rls_bundle_{secrets.token_hex(4)}" for _ in range(2))
    for tenant, customer in ((a, "customer_of_a"), (b, "customer_of_b")):
        async with db.transaction(tenant) as con:
            await con.execute(
                "INSERT INTO decision_trace (tenant_id, id, customer_id, decided_at, channel) "
                "VALUES ($1, 'dec_shared', $2, now(), 'web'), ($1, $1, $2, now(), 'web')",
                tenant,
                customer,
            )
    read = repository.BUNDLE_SQL.replace("SELECT *", "SELECT customer_id", 1)
    async with db.connection() as con:
        assert not await con.fetchval(
            "SELECT prosecdef FROM pg_proc WHERE proname = 'kaireon_provenance_bundle'"
        )
        assert await con.fetchval(read, a, "dec_shared") == "customer_of_a"
        assert await con.fetchval(read, b, "dec_shared") == "customer_of_b"
        assert await con.fetch(read, b, a) == []  # A's own decision id, asked as B
        assert await con.fetch(read, "", a) == []
        assert not await con.fetchval("SELECT current_setting('kaireon.tenant_id', true)")
        assert await con.fetchval("SELECT count(*) FROM decision_trace") == 0
    # Inside a tenant's transaction it leaves that transaction's tenant as it was.
    async with db.transaction(a) as con:
        assert await con.fetchval(read, b, b) == "customer_of_b"
        assert await con.fetchval("SELECT current_setting('kaireon.tenant_id', true)") == a


async def test_a_pool_role_that_could_bypass_is_refused(database_url: str) -> None:
    env = {"DATABASE_URL": database_url, "KAIREON_APP_DATABASE_URL": database_url}
    env["KAIREON_TRUST_HEADERS"] = "true"
    with pytest.raises(ConfigurationError, match="row-level security would not apply"):
        await connect_database(Settings.from_env(env))


def test_app_role_dsn_replaces_only_the_user() -> None:
    assert (
        app_role_dsn("postgresql://postgres:secret@db.example:5433/kaireon?sslmode=require")
        == "postgresql://kaireon_app@db.example:5433/kaireon?sslmode=require"
    )
    assert (
        app_role_dsn("postgresql://postgres:@/kaireon?host=/tmp/pg&user=postgres", "p@ss")
        == "postgresql://kaireon_app:p%40ss@/kaireon?host=%2Ftmp%2Fpg"
    )


def test_owner_connections_stay_off_request_paths() -> None:
    """Only start-up code (the app, the demo seed) may open owner connections."""
    allowed = {"platform/db/database.py", "demo/seed.py"}
    package = ROOT / "server" / "kaireon_server"
    offenders: list[str] = []
    for path in package.rglob("*.py"):
        rel = path.relative_to(package).as_posix()
        for node in ast.walk(ast.parse(path.read_text())):
            is_call = isinstance(node, ast.Attribute) and node.attr == "owner_connection"
            if is_call and rel not in allowed:
                offenders.append(f"{rel}:{node.lineno}")
    assert offenders == []
