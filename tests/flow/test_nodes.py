"""The built-in node catalogue, run through the runner with the PostgreSQL store."""

from __future__ import annotations

import copy
import secrets
from datetime import UTC, datetime
from typing import Any

import pytest

from kaireon_server.flow import (
    FlowRunner,
    NodeRegistry,
    NodeServices,
    NodeState,
    PostgresCheckpointStore,
    RunResult,
    definition_from_json,
    validate,
)
from kaireon_server.platform.db import Database
from kaireon_server.platform.db.identifiers import quote_ident
from kaireon_server.platform.errors import InvalidArgument

PEOPLE = [
    {"id": 1, "name": "Ada", "email": "ada@example.com", "age": "36", "city": "Oslo"},
    {"id": 2, "name": "Bob", "email": "bob@example.org", "age": "17", "city": "Rome"},
    {"id": 3, "name": "Cy", "email": None, "age": "x", "city": "Oslo"},
    {"id": 1, "name": "Ada", "email": "ada@example.com", "age": "36", "city": "Oslo"},
]


def node(node_id: str, node_type: str, *deps: str, **config: Any) -> dict[str, Any]:
    return {"id": node_id, "type": node_type, "config": config, "dependsOn": list(deps)}


def inline(node_id: str = "src", records: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return node(
        node_id, "source.inline", records=copy.deepcopy(PEOPLE if records is None else records)
    )


async def run_flow(
    registry: NodeRegistry,
    db: Database,
    tenant: str,
    *nodes: dict[str, Any],
    env: dict[str, str] | None = None,
) -> RunResult:
    plan = validate(definition_from_json({"nodes": list(nodes)}), registry, env=env)
    runner = FlowRunner(PostgresCheckpointStore(db), services=NodeServices(db=db, env=env or {}))
    return await runner.run(plan, tenant_id=tenant, run_id=f"n{secrets.token_hex(4)}")


def field_errors(exc: InvalidArgument) -> list[tuple[str, str]]:
    return [(v.field, v.description) for v in exc.violations]


async def test_transform_chain(registry, db, tenant) -> None:
    result = await run_flow(
        registry,
        db,
        tenant,
        inline(),
        node("dedupe", "transform.dedupe", "src", keys=["id"]),
        node("cast", "transform.cast", "dedupe", fields={"age": "integer"}, on_error="null"),
        node("adults", "transform.filter", "cast", where="age >= 18 or age == null"),
        node(
            "derive",
            "transform.derive",
            "adults",
            fields={"label": "concat(upper(name), '@', city)", "next_age": "age + 1"},
        ),
        node("rename", "transform.rename", "derive", fields={"name": "full_name"}),
    )
    assert result.state.value == "succeeded", result.error
    assert result.outputs["rename"] == [
        {
            "id": 1,
            "full_name": "Ada",
            "email": "ada@example.com",
            "age": 36,
            "city": "Oslo",
            "label": "ADA@Oslo",
            "next_age": 37,
        },
        {
            "id": 3,
            "full_name": "Cy",
            "email": None,
            "age": None,
            "city": "Oslo",
            "label": "CY@Oslo",
            "next_age": None,
        },
    ]
    # Inputs are never mutated: the source's checkpointed output is intact.
    assert result.outputs["src"] == PEOPLE


async def test_cast_failure_names_record_and_field_not_value(registry, db, tenant) -> None:
    result = await run_flow(
        registry,
        db,
        tenant,
        inline(),
        node("cast", "transform.cast", "src", fields={"age": "integer"}),
    )
    assert result.nodes["cast"].state is NodeState.FAILED
    assert result.nodes["cast"].error == "record 2: field 'age' cannot be cast to integer"


@pytest.mark.parametrize(
    ("target", "value", "expected"),
    [
        ("string", 5, "5"),
        ("string", True, "true"),
        ("integer", "7", 7),
        ("integer", 7.0, 7),
        ("number", "2.5", 2.5),
        ("boolean", "yes", True),
        ("boolean", "0", False),
        ("timestamp", "2024-05-01T10:00:00+02:00", "2024-05-01T08:00:00Z"),
        ("date", "2024-05-01T10:00:00Z", "2024-05-01"),
    ],
)
async def test_cast_types(registry, db, tenant, target, value, expected) -> None:
    result = await run_flow(
        registry,
        db,
        tenant,
        inline(records=[{"v": value}]),
        node("cast", "transform.cast", "src", fields={"v": target}),
    )
    assert result.outputs["cast"] == [{"v": expected}]


async def test_join_inner_and_left(registry, db, tenant) -> None:
    orders = [
        {"order": "o1", "customer": 1, "total": 10},
        {"order": "o2", "customer": 9, "total": 5},
        {"order": "o3", "customer": None, "total": 1},
    ]
    people = [{"id": 1, "name": "Ada", "total": 999}, {"id": None, "name": "Nobody"}]
    common = (inline("orders", orders), inline("people", people))
    on = [{"left": "customer", "right": "id"}]
    result = await run_flow(
        registry,
        db,
        tenant,
        *common,
        node("inner", "transform.join", "orders", "people", left="orders", right="people", on=on),
        node(
            "outer",
            "transform.join",
            "orders",
            "people",
            left="orders",
            right="people",
            on=on,
            how="left",
            right_prefix="p_",
        ),
    )
    assert result.outputs["inner"] == [{"order": "o1", "customer": 1, "total": 10, "name": "Ada"}]
    assert result.outputs["outer"] == [
        {"order": "o1", "customer": 1, "total": 10, "p_id": 1, "p_name": "Ada", "p_total": 999},
        {"order": "o2", "customer": 9, "total": 5},
        {"order": "o3", "customer": None, "total": 1},
    ]


async def test_mask_modes(registry, db, tenant) -> None:
    env = {"KAIREON_FLOW_MASK_KEY": "a-test-key-of-32-characters-long"}
    records = [
        {"email": "ada@example.com", "phone": "+4712345678", "name": "Ada", "ssn": "1", "n": 5}
    ]
    result = await run_flow(
        registry,
        db,
        tenant,
        inline(records=records),
        node(
            "mask",
            "transform.mask",
            "src",
            fields={
                "email": "partial",
                "phone": "partial",
                "name": "hash",
                "ssn": "null",
                "n": "redact",
            },
        ),
        env=env,
    )
    masked = result.outputs["mask"][0]
    assert masked["email"] == "***@example.com" and masked["phone"] == "*******5678"
    assert masked["ssn"] is None and masked["n"] == "[REDACTED]"
    assert len(masked["name"]) == 64 and masked["name"] != "Ada"
    again = await run_flow(
        registry,
        db,
        tenant,
        inline(records=records),
        node("mask", "transform.mask", "src", fields={"name": "hash"}),
        env=env,
    )
    assert again.outputs["mask"][0]["name"] == masked["name"]  # stable: joins still work
    rotated = {"KAIREON_FLOW_MASK_KEY": "another-key-of-32-characters-xx"}
    other = await run_flow(
        registry,
        db,
        tenant,
        inline(records=records),
        node("mask", "transform.mask", "src", fields={"name": "hash"}),
        env=rotated,
    )
    assert other.outputs["mask"][0]["name"] != masked["name"]
    assert other.nodes["mask"].cache_key != again.nodes["mask"].cache_key


def test_mask_hash_needs_a_key(registry) -> None:
    defn = definition_from_json(
        {"nodes": [inline(), node("m", "transform.mask", "src", fields={"email": "hash"})]}
    )
    with pytest.raises(InvalidArgument) as err:
        validate(defn, registry, env={})
    assert err.value.violations[0].field == "definition.nodes[1].config.fields"
    assert "KAIREON_FLOW_MASK_KEY" in err.value.violations[0].description


@pytest.mark.parametrize(
    ("bad", "field", "text"),
    [
        (node("f", "transform.filter", "src"), "definition.nodes[1].config.where", "is required"),
        (
            node("f", "transform.filter", "src", where="a", typo=1),
            "definition.nodes[1].config.typo",
            "unknown option",
        ),
        (
            node("c", "transform.cast", "src", fields={"a": "uuid"}),
            "definition.nodes[1].config.fields.a",
            "must be one of",
        ),
        (
            node("r", "transform.rename", "src", fields={"a": "x", "b": "x"}),
            "definition.nodes[1].config.fields",
            "same name",
        ),
        (
            node("d", "transform.dedupe", "src", keys=[]),
            "definition.nodes[1].config.keys",
            "must not be empty",
        ),
        (
            node(
                "j",
                "transform.join",
                "src",
                left="src",
                right="other",
                on=[{"left": "a", "right": "b"}],
            ),
            "definition.nodes[1].config.right",
            "dependencies",
        ),
        (
            node("j", "transform.join", "src", left="src", right="src", on=[{"left": "a"}]),
            "definition.nodes[1].config.on[0].right",
            "is required",
        ),
        (
            node("s", "source.inline", "src", records=[]),
            "definition.nodes[1].config",
            "no dependencies",
        ),
        (
            node("s", "source.inline", records=[1]),
            "definition.nodes[1].config.records[0]",
            "object",
        ),
        (
            node("t", "sink.table", "src", table="audit_log"),
            "definition.nodes[1].config.table",
            "ds_",
        ),
        (
            node("t", "sink.table", "src", table="ds_x", mode="upsert"),
            "definition.nodes[1].config.key",
            "required",
        ),
        (
            node("q", "source.sql", query="DELETE FROM offer"),
            "definition.nodes[1].config.query",
            "only SELECT",
        ),
        (
            node("q", "source.sql", query="SELECT * FROM audit_log"),
            "definition.nodes[1].config.query",
            "not readable",
        ),
        (
            node("q", "source.sql", query="SELECT pg_read_file('/etc/passwd')"),
            "definition.nodes[1].config.query",
            "pg_read_file",
        ),
        (
            node("q", "source.sql", query="SELECT 1", max_rows=10**9),
            "definition.nodes[1].config.max_rows",
            "at most",
        ),
    ],
)
def test_bad_configs_name_the_option(registry, bad, field, text) -> None:
    defn = definition_from_json({"nodes": [inline(), bad]})
    with pytest.raises(InvalidArgument) as err:
        validate(defn, registry)
    assert err.value.violations[0].field == field
    assert text in err.value.violations[0].description
    assert err.value.metadata["node_id"] == bad["id"]


async def _seed_interactions(db: Database, tenant: str, rows: int) -> None:
    async with db.transaction(tenant) as con:
        await con.executemany(
            "INSERT INTO interaction_history (tenant_id, customer_id, offer_id, channel, event_type, occurred_at) "
            "VALUES ($1, $2, 'o1', $3, 'click', $4)",
            [
                (tenant, f"c{i}", "web" if i % 2 else "email", datetime(2024, 1, 1, tzinfo=UTC))
                for i in range(rows)
            ],
        )


async def test_sql_source_sees_only_the_tenant(registry, db, tenant) -> None:
    other = tenant + "o"
    await _seed_interactions(db, tenant, 4)
    await _seed_interactions(db, other, 6)
    result = await run_flow(
        registry,
        db,
        tenant,
        node(
            "q",
            "source.sql",
            query="SELECT customer_id, channel, occurred_at FROM interaction_history h "
            "WHERE h.channel = $1 ORDER BY customer_id",
            params=["web"],
        ),
        node(
            "all",
            "source.sql",
            query="SELECT count(*) AS n, count(DISTINCT tenant_id) AS tenants "
            "FROM interaction_history",
        ),
    )
    assert result.state.value == "succeeded", result.error
    assert result.outputs["q"] == [
        {"customer_id": "c1", "channel": "web", "occurred_at": "2024-01-01T00:00:00+00:00"},
        {"customer_id": "c3", "channel": "web", "occurred_at": "2024-01-01T00:00:00+00:00"},
    ]
    assert result.outputs["all"] == [{"n": 4, "tenants": 1}]


async def test_sql_source_limits(registry, db, tenant) -> None:
    await _seed_interactions(db, tenant, 5)
    result = await run_flow(
        registry,
        db,
        tenant,
        node("rows", "source.sql", query="SELECT customer_id FROM interaction_history", max_rows=3),
        node(
            "slow",
            "source.sql",
            query="SELECT count(*) FROM generate_series(1, 50000000)",
            timeout_ms=50,
        ),
        node("dup", "source.sql", query="SELECT 1 AS a, 2 AS a"),
        node(
            "param",
            "source.sql",
            query="SELECT count(*) AS n FROM interaction_history WHERE 1 = $1",
            params=[1],
        ),
    )
    assert result.nodes["rows"].error == "query returned more than max_rows (3) rows"
    assert result.nodes["slow"].error == "query exceeded its timeout"
    assert result.nodes["dup"].error == "query returns duplicate column names; alias them"
    assert result.outputs["param"] == [{"n": 5}]


@pytest.fixture
async def ds_table(db: Database, tenant: str) -> str:
    table = f"ds_{tenant}_points"
    async with db.owner_connection() as owner:  # the platform creates ds_* tables
        await owner.execute(
            f"CREATE TABLE {quote_ident(table)} (tenant_id text NOT NULL, customer_id text NOT NULL, "
            "points integer NOT NULL, updated date, PRIMARY KEY (tenant_id, customer_id))"
        )
    async with db.transaction(tenant) as con:
        await con.execute(
            "INSERT INTO schema_registry (tenant_id, schema_id, table_name, entity_type) VALUES ($1, 'points', $2, 'customer')",
            tenant,
            table,
        )
    return table


async def read_table(db: Database, tenant: str, table: str) -> list[dict[str, Any]]:
    async with db.transaction(tenant) as con:
        rows = await con.fetch(
            f"SELECT * FROM {quote_ident(table)} ORDER BY tenant_id, customer_id"
        )
    return [dict(r) for r in rows]


async def test_table_sink_insert_and_upsert(registry, db, tenant, ds_table) -> None:
    records = [
        {"customer_id": "c1", "points": 10, "updated": "2024-02-01", "tenant_id": "someone-else"},
        {"customer_id": "c2", "points": 20},
    ]
    result = await run_flow(
        registry,
        db,
        tenant,
        inline(records=records),
        node("sink", "sink.table", "src", table=ds_table),
    )
    assert result.outputs["sink"] == {"table": ds_table, "written": 2}
    rows = await read_table(db, tenant, ds_table)
    assert [(r["tenant_id"], r["customer_id"], r["points"]) for r in rows] == [
        (tenant, "c1", 10),
        (tenant, "c2", 20),
    ]
    assert str(rows[0]["updated"]) == "2024-02-01" and rows[1]["updated"] is None

    upsert = await run_flow(
        registry,
        db,
        tenant,
        inline(records=[{"customer_id": "c1", "points": 11}]),
        node("sink", "sink.table", "src", table=ds_table, mode="upsert", key=["customer_id"]),
    )
    assert upsert.outputs["sink"]["written"] == 1
    assert [r["points"] for r in await read_table(db, tenant, ds_table)] == [11, 20]
    # A plain insert of an existing key fails and writes nothing (constraint, SQLSTATE only).
    dup = await run_flow(
        registry,
        db,
        tenant,
        inline(records=[{"customer_id": "c9", "points": 1}, {"customer_id": "c1", "points": 1}]),
        node("sink", "sink.table", "src", table=ds_table),
    )
    assert dup.nodes["sink"].error == "write failed (SQLSTATE 23505)"
    assert len(await read_table(db, tenant, ds_table)) == 2


async def test_table_sink_refuses_unknown_columns_and_foreign_tables(
    registry, db, tenant, ds_table
) -> None:
    bad = await run_flow(
        registry,
        db,
        tenant,
        inline(records=[{"customer_id": "c1", "points": 1, "evil": 1}]),
        node("sink", "sink.table", "src", table=ds_table),
    )
    assert bad.nodes["sink"].error == f"record 0: 'evil' is not a column of {ds_table}"
    # Another tenant cannot write to this tenant's registered table.
    other = await run_flow(
        registry,
        db,
        tenant + "z",
        inline(records=[{"customer_id": "c1", "points": 1}]),
        node("sink", "sink.table", "src", table=ds_table),
    )
    assert other.nodes["sink"].error == f"table '{ds_table}' is not registered for this tenant"
    assert await read_table(db, tenant, ds_table) == []


async def test_sql_source_reads_registered_ds_tables_only(registry, db, tenant, ds_table) -> None:
    await run_flow(
        registry,
        db,
        tenant,
        inline(records=[{"customer_id": "c1", "points": 3}]),
        node("sink", "sink.table", "src", table=ds_table),
    )
    mine = await run_flow(
        registry,
        db,
        tenant,
        node("q", "source.sql", query=f"SELECT customer_id, points FROM {ds_table}"),
    )
    assert mine.outputs["q"] == [{"customer_id": "c1", "points": 3}]
    theirs = await run_flow(
        registry, db, tenant + "z", node("q", "source.sql", query=f"SELECT * FROM {ds_table}")
    )
    assert theirs.nodes["q"].error == f"query rejected: table '{ds_table}' is not readable by flows"
