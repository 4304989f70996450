"""Dynamic customer tables (ds_*): which are erased, which are skipped and reported."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from kaireon_server.platform.db import Database
from tests.erasure.support import erase, error_reason

CUSTOMER = "42"


async def _table(
    con,
    tenant: str,
    name: str,
    columns: str,
    *,
    register: bool = True,
    active: bool = True,
    entity_type: str = "customer",
) -> str:
    table = f"ds_{tenant}_{name}"
    if columns:
        await con.execute(f'CREATE TABLE "{table}" ({columns})')
    if register:
        await con.execute(
            "INSERT INTO schema_registry (tenant_id, schema_id, table_name, entity_type, active) "
            "VALUES ($1, $2, $3, $4, $5)",
            tenant,
            name,
            table,
            entity_type,
            active,
        )
    return table


@pytest.fixture
async def tables(db: Database, tenant: str) -> AsyncIterator[dict[str, str]]:
    """One tenant's registry with every kind of entry; the tables are dropped afterwards."""
    made: dict[str, str] = {}
    async with db.owner_connection() as con:
        made["text"] = await _table(con, tenant, "text", "tenant_id text, customer_id text, v int")
        made["varchar"] = await _table(
            con, tenant, "varchar", "tenant_id text, customer_id varchar(64), v int"
        )
        made["bigint"] = await _table(con, tenant, "bigint", "tenant_id text, customer_id bigint")
        made["inactive"] = await _table(
            con, tenant, "inactive", "tenant_id text, customer_id text", active=False
        )
        made["product"] = await _table(
            con, tenant, "product", "tenant_id text, customer_id text", entity_type="product"
        )
        made["unregistered"] = await _table(
            con, tenant, "unregistered", "tenant_id text, customer_id text", register=False
        )
        made["nocol"] = await _table(con, tenant, "nocol", "tenant_id text, session_id text")
        made["missing"] = await _table(con, tenant, "missing", "")
        made["dropped"] = await _table(con, tenant, "dropped", "tenant_id text, customer_id text")
        await con.execute(f'ALTER TABLE "{made["dropped"]}" DROP COLUMN customer_id')
        for key in ("text", "varchar", "inactive", "product", "unregistered"):
            await con.executemany(
                f'INSERT INTO "{made[key]}" (tenant_id, customer_id) VALUES ($1, $2)',
                [(tenant, CUSTOMER), (tenant, CUSTOMER), (tenant, "43"), ("other", CUSTOMER)],
            )
        await con.executemany(
            f'INSERT INTO "{made["bigint"]}" VALUES ($1, $2)',
            [(tenant, 42), (tenant, 43), ("other", 42)],
        )
    yield made
    async with db.owner_connection() as con:
        for table in made.values():
            await con.execute(f'DROP TABLE IF EXISTS "{table}"')
        await con.execute("DELETE FROM schema_registry WHERE tenant_id = $1", tenant)


async def _rows(db: Database, table: str) -> list[tuple[str, str]]:
    async with db.owner_connection() as con:
        rows = await con.fetch(
            f'SELECT tenant_id, customer_id::text AS c FROM "{table}" ORDER BY 1, 2'
        )
    return [(r["tenant_id"], r["c"]) for r in rows]


async def test_registered_active_customer_tables_are_erased_others_skipped_or_ignored(
    stub, db: Database, tenant: str, tables: dict[str, str]
):
    preview = await erase(stub, tenant, CUSTOMER, dry_run=True)
    reply = await erase(stub, tenant, CUSTOMER)
    # Two rows each in text and varchar, one in bigint (compared as text).
    assert (
        reply.deleted_counts.dynamic_schema_rows == 5 == preview.deleted_counts.dynamic_schema_rows
    )
    assert reply.total_deleted == 5
    # Registered active customer tables without a usable customer_id column, sorted.
    assert list(reply.skipped_tables) == sorted(
        [tables["dropped"], tables["missing"], tables["nocol"]]
    )
    for key in ("text", "varchar", "bigint"):
        assert CUSTOMER not in [c for t, c in await _rows(db, tables[key]) if t == tenant], key
        # Another tenant's rows in the same table, and other customers, stay.
        assert ("other", CUSTOMER) in await _rows(db, tables[key])
        assert (tenant, "43") in await _rows(db, tables[key])
    for key in ("inactive", "product", "unregistered"):
        assert (await _rows(db, tables[key])).count((tenant, CUSTOMER)) == 2, key


async def test_a_customer_table_without_tenant_id_refuses_the_erasure(
    stub, db: Database, tenant: str, tables: dict[str, str]
):
    async with db.owner_connection() as con:
        bare = await _table(con, tenant, "bare", "customer_id text")
        await con.execute(f'INSERT INTO "{bare}" VALUES ($1)', CUSTOMER)
    try:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await erase(stub, tenant, CUSTOMER)
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert error_reason(caught.value) == "DYNAMIC_TABLE_WITHOUT_TENANT"
        assert bare in caught.value.details()
        # Nothing deleted anywhere.
        assert (await _rows(db, tables["text"])).count((tenant, CUSTOMER)) == 2
    finally:
        async with db.owner_connection() as con:
            await con.execute(f'DROP TABLE "{bare}"')
