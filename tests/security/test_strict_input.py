"""Issue #14's input findings, re-run against the real server over REST and gRPC.

- A misspelled field on a destructive route (`{"dryrun": true}`) used to be
  ignored, so the erasure ran for real: it is 400 naming the field.
- A duplicated key (`"dryRun": true, "dryRun": false`, or `dryRun` and
  `dry_run`) used to run with the last value: it is 400 in both gateway modes.
- NaN / Infinity / 1e400 in a flow definition's config used to be INTERNAL
  (500): they are INVALID_ARGUMENT / 400 naming the field, for every RPC.
Each refused request leaves the tenant's rows exactly as they were.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import grpc
import pytest
from google.protobuf import json_format

from kaireon.flow.v1 import flow_pb2
from kaireon_server.app import App
from kaireon_server.gateway import DEFAULT_SERVICES, GatewayServer, GatewaySettings
from kaireon_server.platform.db import Database
from tests.security.conftest import World, new_tenant, populate
from tests.security.rpcs import BY_NAME, call
from tests.security.snapshot import Snapshotter
from tests.security.test_hostile_inputs import reason, violation_fields
from tests.support.server import metadata

ERASURE = "/api/v1/gdpr/erasure"


@pytest.fixture(scope="module")
async def world(channel: grpc.aio.Channel, db: Database, database_url: str) -> World:
    return await populate(channel, db, database_url, new_tenant("s"))


@pytest.fixture(scope="module")
async def ready(snapshots: Snapshotter, world: World) -> Snapshotter:
    await snapshots.refresh()
    return snapshots


@pytest.fixture(scope="module")
async def bases(app: App, grpc_target: str) -> AsyncIterator[dict[str, str]]:
    """The server's own gateway (strict by default) and a lenient one in front of it."""
    lenient = GatewayServer(grpc_target, list(DEFAULT_SERVICES), GatewaySettings(strict_json=False))
    await lenient.start("127.0.0.1", 0)
    yield {
        "strict": f"http://127.0.0.1:{app.http_port}",
        "lenient": f"http://127.0.0.1:{lenient.port}",
    }
    await lenient.stop()


async def _post(
    base: str, path: str, tenant: str, body: bytes, params: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    headers = {"X-Tenant-Id": tenant, "X-User-Role": "admin", "Content-Type": "application/json"}
    async with aiohttp.ClientSession() as http:
        async with http.post(base + path, data=body, params=params, headers=headers) as response:
            return response.status, await response.json()


async def _customer_rows(ready: Snapshotter, world: World) -> int:
    """The customer's rows in every table with a customer_id (owner connection, no RLS)."""
    total = 0
    for table in ready.tables:
        has_column = await ready.con.fetchval(
            "SELECT 1 FROM information_schema.columns WHERE table_schema = 'public' "
            "AND table_name = $1 AND column_name = 'customer_id'",
            table,
        )
        if has_column:
            quoted = '"' + table.replace('"', '""') + '"'
            total += await ready.con.fetchval(
                f"SELECT count(*) FROM {quoted} WHERE tenant_id = $1 AND customer_id = $2",
                world.tenant,
                world.customer,
            )
    return total


async def test_finding_3_misspelled_dry_run_is_400_and_erases_nothing(
    world: World, ready: Snapshotter, bases: dict[str, str]
) -> None:
    await ready.wait_idle(world.tenant)
    rows = await _customer_rows(ready, world)
    assert rows > 0
    before = await ready.take(world.tenant)
    body = json.dumps({"customerId": world.customer, "dryrun": True}).encode()
    status, error = await _post(bases["strict"], ERASURE, world.tenant, body)
    assert status == 400 and error["code"] == 3
    assert error["message"].startswith("dryrun: unknown field 'dryrun'"), error
    # The flag as a query parameter of a body "*" route would be dropped too.
    body = json.dumps({"customerId": world.customer}).encode()
    status, error = await _post(bases["strict"], ERASURE, world.tenant, body, {"dryRun": "true"})
    assert status == 400 and "query parameter 'dryRun'" in error["message"]
    after = await ready.take(world.tenant)
    assert after == before, before.changed_tables(after)
    assert await _customer_rows(ready, world) == rows


DUPLICATES = {
    "same_key": b'{"customerId": "%s", "dryRun": true, "dryRun": false}',
    "json_and_proto_name": b'{"customerId": "%s", "dryRun": true, "dry_run": false}',
    "nested_duplicate_customer": b'{"customerId": "%s", "customerId": "cust_00003", "dryRun": true}',
}


@pytest.mark.parametrize("mode", ["strict", "lenient"])
@pytest.mark.parametrize("case", sorted(DUPLICATES))
async def test_duplicate_keys_are_400_in_both_modes_and_erase_nothing(
    world: World, ready: Snapshotter, bases: dict[str, str], mode: str, case: str
) -> None:
    await ready.wait_idle(world.tenant)
    rows = await _customer_rows(ready, world)
    before = await ready.take(world.tenant)
    body = DUPLICATES[case] % world.customer.encode()
    status, error = await _post(bases[mode], ERASURE, world.tenant, body)
    assert status == 400 and error["code"] == 3, error
    if case == "json_and_proto_name":
        assert "dry_run: given twice, as 'dryRun' and 'dry_run'" in error["message"]
    else:
        assert error["message"].startswith("duplicate key '"), error
    after = await ready.take(world.tenant)
    assert after == before, before.changed_tables(after)
    assert await _customer_rows(ready, world) == rows


async def test_a_correct_dry_run_still_passes_and_erases_nothing(
    world: World, ready: Snapshotter, bases: dict[str, str]
) -> None:
    """Control: strictness refuses the wrong requests, not the right one."""
    rows = await _customer_rows(ready, world)
    body = json.dumps({"customerId": world.customer, "dryRun": True}).encode()
    status, reply = await _post(bases["strict"], ERASURE, world.tenant, body)
    assert status == 200, reply
    assert sum(int(n) for n in reply["deletedCounts"].values()) > 0  # what it would erase
    assert await _customer_rows(ready, world) == rows


def _flow_body(value: str, where: str = "config") -> bytes:
    if where == "config":
        node = (
            f'{{"id": "a", "type": "source.inline", "config": {{"records": [{{"n": {value}}}]}}}}'
        )
    else:  # a double field: proto3 JSON takes "NaN" / "Infinity" as strings
        node = f'{{"id": "a", "type": "source.inline", "config": {{"records": []}}, "timeoutSeconds": {value}}}'
    return f'{{"runId": "nf", "definition": {{"nodes": [{node}]}}}}'.encode()


REST_NON_FINITE = {
    "nan_literal": (_flow_body("NaN"), "definition.nodes[0].config.records[0].n"),
    "infinity_literal": (_flow_body("-Infinity"), "definition.nodes[0].config.records[0].n"),
    "overflow_1e400": (_flow_body("1e400"), "definition.nodes[0].config.records[0].n"),
    "huge_integer": (_flow_body("9" * 400), "definition.nodes[0].config.records[0].n"),
    "quoted_nan_double": (_flow_body('"NaN"', "timeout"), "definition.nodes[0].timeout_seconds"),
    "quoted_infinity_double": (
        _flow_body('"Infinity"', "timeout"),
        "definition.nodes[0].timeout_seconds",
    ),
}


@pytest.mark.parametrize("mode", ["strict", "lenient"])
@pytest.mark.parametrize("case", sorted(REST_NON_FINITE))
async def test_non_finite_numbers_in_flow_definitions_are_400_over_rest(
    world: World, ready: Snapshotter, bases: dict[str, str], mode: str, case: str
) -> None:
    await ready.wait_idle(world.tenant)
    before = await ready.take(world.tenant)
    body, field = REST_NON_FINITE[case]
    for path in ("/api/v1/flow/runs", f"/api/v1/flow/runs/{world.run_id}:retry"):
        status, error = await _post(bases[mode], path, world.tenant, body)
        assert status == 400 and error["code"] == 3, (path, error)
        assert error["message"].startswith(field), (path, error)
    assert await ready.take(world.tenant) == before


def _start_run(value: float, *, in_timeout: bool = False) -> flow_pb2.StartRunRequest:
    definition = json_format.ParseDict(
        {"nodes": [{"id": "a", "type": "source.inline", "config": {"records": [{"k": "v"}]}}]},
        flow_pb2.FlowDefinition(),
    )
    node = definition.nodes[0]
    if in_timeout:
        node.timeout_seconds = value
    else:
        node.config["records"][0]["n"] = value  # type: ignore[index]
    return flow_pb2.StartRunRequest(definition=definition, run_id="nf-grpc")


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("in_timeout", [False, True])
async def test_non_finite_numbers_are_invalid_argument_over_grpc(
    world: World, ready: Snapshotter, channel: grpc.aio.Channel, value: float, in_timeout: bool
) -> None:
    await ready.wait_idle(world.tenant)
    before = await ready.take(world.tenant)
    start = _start_run(value, in_timeout=in_timeout)
    retry = flow_pb2.RetryRunRequest(run_id=world.run_id, definition=start.definition)
    field = (
        "definition.nodes[0].timeout_seconds"
        if in_timeout
        else "definition.nodes[0].config.records[0].n"
    )
    for name, request in (("StartRun", start), ("RetryRun", retry)):
        outcome = await call(
            channel,
            BY_NAME[f"FlowRunnerService.{name}"],
            request,
            metadata(world.tenant, "admin"),
        )
        assert outcome.code is grpc.StatusCode.INVALID_ARGUMENT, (name, outcome.details)
        assert violation_fields(outcome) == [field], name
        assert reason(outcome) == "NON_FINITE_NUMBER"
    assert await ready.take(world.tenant) == before


async def test_finite_extremes_still_run(
    world: World, ready: Snapshotter, channel: grpc.aio.Channel
) -> None:
    """Control: the largest and smallest doubles are numbers, not errors."""
    request = _start_run(1.7976931348623157e308)
    request.definition.nodes[0].config["records"][0]["m"] = -5e-324  # type: ignore[index]
    request.run_id = "finite-extremes"
    outcome = await call(
        channel, BY_NAME["FlowRunnerService.StartRun"], request, metadata(world.tenant, "admin")
    )
    assert outcome.ok, outcome.details
    await ready.wait_idle(world.tenant)
