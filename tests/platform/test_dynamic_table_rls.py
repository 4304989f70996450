"""Row-level security on dynamic ds_* tables created after the migrations
(platform/db/dynamic_tables.py): secured on registration and by the start-up pass."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from kaireon_server.platform.config import Settings
from kaireon_server.platform.db import Database
from kaireon_server.platform.db.database import APP_ROLE, app_role_dsn, connect_database
from kaireon_server.platform.db.dynamic_tables import (
    _APP_ROLE,
    register_dynamic_table,
    secure_dynamic_tables,
)
from kaireon_server.platform.errors import FailedPrecondition

ROWS = 5


@pytest.fixture
def made() -> list[str]:
    """The tables a test created, dropped afterwards."""
    return []


@pytest.fixture
async def owner(database_url: str, made: list[str]) -> AsyncIterator[asyncpg.Connection]:
    con = await asyncpg.connect(database_url)
    try:
        yield con
    finally:
        for table in made:
            await con.execute(f"DROP TABLE IF EXISTS {table}")
        await con.close()


async def _make_table(
    owner: asyncpg.Connection, made: list[str], name: str, a: str, b: str
) -> None:
    """A new ds_* table, as the owner, after start-up: rows of tenants a and b."""
    await owner.execute(
        f"CREATE TABLE {name} (tenant_id text NOT NULL, customer_id text NOT NULL, "
        "points integer NOT NULL, PRIMARY KEY (tenant_id, customer_id))"
    )
    made.append(name)
    rows = [(t, f"c{n}", n) for t in (a, b) for n in range(ROWS)]
    await owner.executemany(f"INSERT INTO {name} VALUES ($1, $2, $3)", rows)


async def _strip(owner: asyncpg.Connection, table: str) -> None:
    """Undo what migration 0102's event trigger did at CREATE TABLE: the table as on
    a PostgreSQL where the migrating role, no superuser, could not create the trigger
    (or as one created before the trigger existed)."""
    await owner.execute(f"DROP POLICY IF EXISTS tenant_isolation ON {table}")
    await owner.execute(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")


async def _as_app_role(database_url: str) -> asyncpg.Connection:
    con = await asyncpg.connect(app_role_dsn(database_url))
    assert await con.fetchval("SELECT current_user") == APP_ROLE
    return con


async def _assert_isolated(database_url: str, table: str, a: str, b: str) -> None:
    """Under tenant a's setting the application role sees none of b's rows and
    cannot write any row for b."""
    con = await _as_app_role(database_url)
    try:
        async with con.transaction():
            await con.execute("SELECT set_config('kaireon.tenant_id', $1, true)", a)
            assert await con.fetchval(f"SELECT count(*) FROM {table}") == ROWS
            seen_b = await con.fetchval(
                f"SELECT count(*) FROM {table} WHERE tenant_id = $1",
                b,
            )
            assert seen_b == 0
            assert await con.execute(f"DELETE FROM {table} WHERE tenant_id = $1", b) == "DELETE 0"
            assert (
                await con.execute(f"UPDATE {table} SET points = 0 WHERE tenant_id = $1", b)
                == "UPDATE 0"
            )
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            async with con.transaction():
                await con.execute("SELECT set_config('kaireon.tenant_id', $1, true)", a)
                await con.execute(f"INSERT INTO {table} VALUES ($1, 'new', 1)", b)
        # Moving one of a's rows over to b is refused too (WITH CHECK).
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            async with con.transaction():
                await con.execute("SELECT set_config('kaireon.tenant_id', $1, true)", a)
                await con.execute(f"UPDATE {table} SET tenant_id = $1", b)
        # No tenant set: nothing at all.
        assert await con.fetchval(f"SELECT count(*) FROM {table}") == 0
    finally:
        await con.close()


def test_the_pass_uses_the_pool_role() -> None:
    assert _APP_ROLE == APP_ROLE


async def test_a_table_created_while_the_server_runs_is_isolated_at_once(
    database_url: str, db: Database, owner: asyncpg.Connection, made: list[str], tenant: str
) -> None:
    """Migration 0102's event trigger: no registration, no restart needed."""
    a, b = tenant, f"{tenant}b"
    table = f"ds_{tenant}_live"
    await _make_table(owner, made, table, a, b)
    await _assert_isolated(database_url, table, a, b)
    bare = f"ds_{tenant}_live_bare"
    await owner.execute(f"CREATE TABLE {bare} AS SELECT 'c1'::text AS customer_id")
    made.append(bare)
    con = await _as_app_role(database_url)
    try:
        async with con.transaction():
            await con.execute("SELECT set_config('kaireon.tenant_id', $1, true)", a)
            assert await con.fetchval(f"SELECT count(*) FROM {bare}") == 0
    finally:
        await con.close()


async def test_a_table_registered_after_start_up_is_isolated(
    database_url: str, db: Database, owner: asyncpg.Connection, made: list[str], tenant: str
) -> None:
    a, b = tenant, f"{tenant}b"
    table = f"ds_{tenant}_late"
    await _make_table(owner, made, table, a, b)
    await _strip(owner, table)
    # Before registration the application role reads every tenant's rows: the gap.
    con = await _as_app_role(database_url)
    try:
        async with con.transaction():
            await con.execute("SELECT set_config('kaireon.tenant_id', $1, true)", a)
            assert await con.fetchval(f"SELECT count(*) FROM {table}") == 2 * ROWS
    finally:
        await con.close()
    async with db.owner_connection() as con:
        result = await register_dynamic_table(con, tenant_id=a, schema_id="late", table_name=table)
    assert result.secured == [table]
    await _assert_isolated(database_url, table, a, b)
    # And through the server's own tenant transaction.
    async with db.transaction(a) as con:
        assert await con.fetchval(f"SELECT count(*) FROM {table}") == ROWS


async def test_registration_refuses_unusable_tables(
    db: Database, owner: asyncpg.Connection, made: list[str], tenant: str
) -> None:
    bare = f"ds_{tenant}_bare"
    await owner.execute(f"CREATE TABLE {bare} (customer_id text)")
    made.append(bare)
    async with db.owner_connection() as con:
        for name in (bare, f"ds_{tenant}_missing"):
            with pytest.raises(FailedPrecondition):
                await register_dynamic_table(con, tenant_id=tenant, schema_id="x", table_name=name)
        with pytest.raises(FailedPrecondition):
            await register_dynamic_table(
                con, tenant_id=tenant, schema_id="x", table_name='ds_x"; DROP TABLE offer; --'
            )
    # Nothing registered.
    assert (
        await owner.fetchval("SELECT count(*) FROM schema_registry WHERE tenant_id = $1", tenant)
        == 0
    )


async def test_the_start_up_pass_secures_tables_and_refuses_those_without_tenant_id(
    database_url: str, db: Database, owner: asyncpg.Connection, made: list[str], tenant: str
) -> None:
    a, b = tenant, f"{tenant}b"
    table, bare = f"ds_{tenant}_startup", f"ds_{tenant}_notenant"
    await _make_table(owner, made, table, a, b)
    await owner.execute(f"CREATE TABLE {bare} (customer_id text, note text)")
    made.append(bare)
    await owner.execute(f"INSERT INTO {bare} VALUES ('c1', 'x')")
    await _strip(owner, table)
    await _strip(owner, bare)
    # A server start (connect_database runs the pass as the owner after the migrations).
    started = await connect_database(
        Settings.from_env({"DATABASE_URL": database_url, "KAIREON_TRUST_HEADERS": "true"})
    )
    try:
        await _assert_isolated(database_url, table, a, b)
        # The table without tenant_id is refused: RLS on, no policy, nothing visible.
        con = await _as_app_role(database_url)
        try:
            async with con.transaction():
                await con.execute("SELECT set_config('kaireon.tenant_id', $1, true)", a)
                assert await con.fetchval(f"SELECT count(*) FROM {bare}") == 0
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await con.execute(f"INSERT INTO {bare} VALUES ('c2', 'y')")
        finally:
            await con.close()
        assert await owner.fetchval(f"SELECT count(*) FROM {bare}") == 1
    finally:
        await started.pool.close()
    # Idempotent: a second pass changes nothing, and still names the refused table.
    again = await secure_dynamic_tables(owner, only=[table, bare])
    assert (again.checked, again.secured, again.refused) == (2, [], [bare])


async def test_the_pass_restores_missing_grants_and_policy(
    database_url: str, db: Database, owner: asyncpg.Connection, made: list[str], tenant: str
) -> None:
    a, b = tenant, f"{tenant}b"
    table = f"ds_{tenant}_regrant"
    await _make_table(owner, made, table, a, b)
    await secure_dynamic_tables(owner, only=[table])
    await owner.execute(f"DROP POLICY tenant_isolation ON {table}")
    await owner.execute(f"REVOKE ALL ON {table} FROM {APP_ROLE}")
    result = await secure_dynamic_tables(owner, only=[table])
    assert result.secured == [table]
    await _assert_isolated(database_url, table, a, b)
