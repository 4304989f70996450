"""sink.table fits API numbers to typed columns, through the real gRPC and REST entry points.

Over the API every JSON number is a Struct double: `"n": 2` arrives as 2.0,
which PostgreSQL refuses for an integer column (SQLSTATE 22P02). The sink
turns integral numbers into integers for smallint/integer/bigint/numeric
columns; a fraction or an out-of-range value fails the node naming the record
and the field, and nothing is written.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import aiohttp
import grpc
import pytest

from kaireon.flow.v1 import flow_pb2, flow_pb2_grpc
from kaireon_server.app import App
from kaireon_server.flow.nodes.column_values import ValueMismatch, fit_record, fit_value
from kaireon_server.flow.nodes.sinks import quote_ident
from kaireon_server.platform.db import Database
from tests.flow.support import definition, wait_finished
from tests.support.server import metadata


@pytest.fixture
async def typed_table(db: Database, tenant: str) -> str:
    table = f"ds_{tenant}_typed"
    async with db.owner_connection() as owner:  # the platform creates ds_* tables
        await owner.execute(
            f"CREATE TABLE {quote_ident(table)} (tenant_id text NOT NULL, id text NOT NULL, "
            "small smallint, n integer, big bigint, amount numeric, ratio real, "
            "PRIMARY KEY (tenant_id, id))"
        )
    async with db.transaction(tenant) as con:
        await con.execute(
            "INSERT INTO schema_registry (tenant_id, schema_id, table_name, entity_type) "
            "VALUES ($1, 'typed', $2, 'customer')",
            tenant,
            table,
        )
    return table


def _nodes(table: str, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"id": "src", "type": "source.inline", "config": {"records": records}},
        {"id": "sink", "type": "sink.table", "dependsOn": ["src"], "config": {"table": table}},
    ]


async def _rows(db: Database, tenant: str, table: str) -> list[dict[str, Any]]:
    async with db.transaction(tenant) as con:
        rows = await con.fetch(
            f"SELECT *, amount::text AS amount_text FROM {quote_ident(table)} ORDER BY id"
        )
    return [dict(r) for r in rows]


GOOD = [
    {"id": "a", "small": 1, "n": 2, "big": -(2**63), "amount": 3, "ratio": 0.5},
    {"id": "b", "small": -32768, "n": 2147483647, "big": 2**53, "amount": 2.25},
    {"id": "c", "n": "17", "amount": 1e20},
]


def _check_good(rows: list[dict[str, Any]]) -> None:
    assert [(r["id"], r["small"], r["n"], r["big"]) for r in rows] == [
        ("a", 1, 2, -(2**63)),
        ("b", -32768, 2147483647, 2**53),
        ("c", None, 17, None),
    ]
    # 3 (a double 3.0 on the wire) is stored as 3, not 3.0; 1e20 exactly.
    assert [r["amount_text"] for r in rows] == ["3", "2.25", "100000000000000000000"]
    assert rows[0]["ratio"] == 0.5


async def _start_grpc(
    channel: grpc.aio.Channel, tenant: str, run_id: str, nodes: list[dict[str, Any]]
) -> flow_pb2.Run:
    stub = flow_pb2_grpc.FlowRunnerServiceStub(channel)
    await stub.StartRun(
        flow_pb2.StartRunRequest(definition=definition(*nodes), run_id=run_id),
        metadata=metadata(tenant, "operator"),
    )
    return await wait_finished(stub, tenant, run_id)


async def _start_rest(
    app: App, tenant: str, run_id: str, nodes: list[dict[str, Any]]
) -> dict[str, Any]:
    base = f"http://127.0.0.1:{app.http_port}/api/v1/flow/runs"
    headers = {"X-Tenant-Id": tenant, "X-User-Role": "operator"}
    async with aiohttp.ClientSession() as http:
        async with http.post(
            base, json={"definition": {"nodes": nodes}, "runId": run_id}, headers=headers
        ) as r:
            assert r.status == 200, await r.text()
        for _ in range(600):
            async with http.get(f"{base}/{run_id}", headers=headers) as r:
                run: dict[str, Any] = await r.json()
            if run["state"] in ("RUN_STATE_SUCCEEDED", "RUN_STATE_FAILED"):
                return run
            await asyncio.sleep(0.05)
    raise AssertionError(f"run {run_id} did not finish")


async def test_integral_numbers_reach_integer_columns_over_grpc(
    channel: grpc.aio.Channel, db: Database, tenant: str, typed_table: str
) -> None:
    run = await _start_grpc(channel, tenant, "typed-grpc", _nodes(typed_table, GOOD))
    assert run.state == flow_pb2.RUN_STATE_SUCCEEDED, run.error
    _check_good(await _rows(db, tenant, typed_table))


async def test_integral_numbers_reach_integer_columns_over_rest(
    app: App, db: Database, tenant: str, typed_table: str
) -> None:
    run = await _start_rest(app, tenant, "typed-rest", _nodes(typed_table, GOOD))
    assert run["state"] == "RUN_STATE_SUCCEEDED", run
    _check_good(await _rows(db, tenant, typed_table))


BAD = {
    "fraction": ({"n": 1.5}, "record 1: 'n' is not a whole number, column type integer needs one"),
    "smallint_range": (
        {"small": 40000},
        "record 1: 'small' is out of range for column type smallint",
    ),
    "integer_range": ({"n": 2**31}, "record 1: 'n' is out of range for column type integer"),
    # 2**63 is exactly a double, one past bigint's maximum.
    "bigint_range": ({"big": 2**63}, "record 1: 'big' is out of range for column type bigint"),
    "text": ({"n": "12abc"}, "record 1: 'n' is not an integer, column type integer needs one"),
    "boolean": ({"n": True}, "record 1: 'n' is a boolean, column type integer needs an integer"),
    "real_range": ({"ratio": 1e39}, "record 1: 'ratio' is out of range for column type real"),
}


@pytest.mark.parametrize("case", sorted(BAD))
@pytest.mark.parametrize("entry", ["grpc", "rest"])
async def test_values_that_do_not_fit_fail_the_node_naming_record_and_field(
    app: App,
    channel: grpc.aio.Channel,
    db: Database,
    tenant: str,
    typed_table: str,
    case: str,
    entry: str,
) -> None:
    fields, message = BAD[case]
    nodes = _nodes(typed_table, [{"id": "ok", "n": 1}, {"id": "bad", **fields}])
    if entry == "grpc":
        run = await _start_grpc(channel, tenant, "bad", nodes)
        assert run.state == flow_pb2.RUN_STATE_FAILED
        errors = {n.node_id: n.error for n in run.nodes}
    else:
        rest_run = await _start_rest(app, tenant, "bad", nodes)
        assert rest_run["state"] == "RUN_STATE_FAILED"
        errors = {n["nodeId"]: n["error"] for n in rest_run["nodes"]}
    assert errors["sink"] == message
    assert await _rows(db, tenant, typed_table) == []  # not even record 0


def test_fit_value_by_column_type() -> None:
    assert fit_value("integer", 1.0) == 1 and isinstance(fit_value("integer", 1.0), int)
    assert fit_value("bigint", " -7 ") == -7
    assert fit_value("numeric", 4.0) == 4 and isinstance(fit_value("numeric", 4.0), int)
    assert fit_value("numeric", 4.5) == 4.5
    assert fit_value("text", 1.0) == 1.0  # other columns: unchanged
    assert fit_value("integer", None) is None
    assert fit_value("smallint", 32767.0) == 32767
    for data_type, value in (
        ("smallint", 32768),
        ("smallint", -32769.0),
        ("integer", float("inf")),
        ("double precision", float("nan")),
        ("integer", [1]),
    ):
        with pytest.raises(ValueMismatch):
            fit_value(data_type, value)
    with pytest.raises(ValueMismatch, match=r"^'n' is not a whole number"):
        fit_record({"n": 0.1}, {"n": "integer"})
    assert fit_record({"n": 2.0, "s": "x"}, {"n": "integer", "s": "text"}) == {"n": 2, "s": "x"}
    assert Decimal(str(fit_value("numeric", 1e20))) == Decimal(10**20)
