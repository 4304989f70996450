"""One operation at a time, timed end to end (group `single`): a heavy customer's
raw DELETE and COPY beside EraseCustomer and the DSAR export, and a watched flow run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import grpc
from google.protobuf import json_format

from kaireon.dsar.v1 import dsar_pb2, dsar_pb2_grpc
from kaireon.erasure.v1 import erasure_pb2, erasure_pb2_grpc
from kaireon.flow.v1 import flow_pb2, flow_pb2_grpc
from kaireon_server.platform import data_map
from kaireon_server.platform.db.identifiers import quote_ident
from kaireon_testkit.server import metadata

S = TypeVar("S")


async def _tables(
    con: asyncpg.Connection, tenant: str, static: list[tuple[str, str]]
) -> list[tuple[str, str]]:
    """(table, subject column) of `static` that exist, then the tenant's registered
    customer ds_* tables that have a customer_id column."""
    present = {
        r["table_name"]
        for r in await con.fetch(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = 'public' AND table_name = ANY($1::text[])",
            [t for t, _ in static],
        )
    }
    dynamic = await con.fetch(
        """
        SELECT r.table_name FROM schema_registry r
         WHERE r.tenant_id = $1 AND r.active AND r.entity_type = 'customer'
           AND EXISTS (SELECT 1 FROM information_schema.columns c
                        WHERE c.table_schema = 'public' AND c.table_name = r.table_name
                          AND c.column_name = 'customer_id')
         ORDER BY r.table_name
        """,
        tenant,
    )
    return [(t, c) for t, c in static if t in present] + [
        (r["table_name"], "customer_id") for r in dynamic
    ]


async def erased_tables(con: asyncpg.Connection, tenant: str) -> list[tuple[str, str]]:
    """(table, subject column) that erasure deletes from, from the data map."""
    static = [(t.table, t.subject_column) for t in data_map.erasure_order()]
    return await _tables(con, tenant, static)


async def exported_tables(con: asyncpg.Connection, tenant: str) -> list[tuple[str, str]]:
    """(table, subject column) that a DSAR export reads, from the data map."""
    static = [(t.table, t.subject_column) for t in data_map.TABLES if t.export_key is not None]
    return await _tables(con, tenant, static)


@dataclass
class Timed:
    seconds: float
    rows: int
    bytes: int = 0
    detail: str = ""


async def raw_delete(con: asyncpg.Connection, tenant: str, customer: str) -> Timed:
    """DELETE every erasable row of the customer in one transaction: the erasure ceiling."""
    tables = await erased_tables(con, tenant)
    started = time.perf_counter()
    rows = 0
    async with con.transaction():
        for table, column in tables:
            where = f"WHERE tenant_id = $1 AND {quote_ident(column)} = $2"
            status = await con.execute(
                f"DELETE FROM {quote_ident(table)} {where}", tenant, customer
            )
            rows += int(status.rsplit(" ", 1)[-1])
    return Timed(time.perf_counter() - started, rows, detail=f"{len(tables)} tables")


async def copy_export(con: asyncpg.Connection, tenant: str, customer: str) -> Timed:
    """COPY (SELECT row_to_json(t) …) TO STDOUT of every exported table: the export ceiling.

    PostgreSQL builds the JSON; the client only receives bytes (and counts lines)."""
    tables = await exported_tables(con, tenant)
    received = {"bytes": 0, "rows": 0}

    async def sink(chunk: bytes) -> None:
        received["bytes"] += len(chunk)
        received["rows"] += chunk.count(b"\n")

    async def literal(value: str) -> str:
        return str(await con.fetchval("SELECT quote_literal($1::text)", value))

    started = time.perf_counter()
    for table, column in tables:
        # COPY takes no bind parameters: the literals are quoted by PostgreSQL itself.
        query = (
            f"SELECT row_to_json(t) FROM {quote_ident(table)} t "
            f"WHERE t.tenant_id = {await literal(tenant)} "
            f"AND t.{quote_ident(column)} = {await literal(customer)}"
        )
        await con.copy_from_query(query, output=sink)
    seconds = time.perf_counter() - started
    return Timed(seconds, received["rows"], received["bytes"], detail=f"{len(tables)} tables")


async def count_rows(con: asyncpg.Connection, tenant: str, customer: str) -> int:
    total = 0
    for table, column in await exported_tables(con, tenant):
        where = f"WHERE tenant_id = $1 AND {quote_ident(column)} = $2"
        total += await con.fetchval(
            f"SELECT count(*) FROM {quote_ident(table)} {where}", tenant, customer
        )
    return total


@contextlib.asynccontextmanager
async def _stub(target: str, stub: Callable[[grpc.aio.Channel], S]) -> AsyncIterator[S]:
    """A stub on a channel of its own (closed after), which takes a DSAR export's
    large messages (the others are small)."""
    options = [("grpc.max_receive_message_length", 256 * 1024 * 1024)]
    async with grpc.aio.insecure_channel(target, options=options) as channel:
        yield stub(channel)


async def service_erase(target: str, tenant: str, customer: str) -> Timed:
    async with _stub(target, erasure_pb2_grpc.ErasureServiceStub) as stub:
        started = time.perf_counter()
        request = erasure_pb2.EraseCustomerRequest(customer_id=customer)
        reply = await stub.EraseCustomer(request, metadata=metadata(tenant), timeout=300)
        return Timed(time.perf_counter() - started, reply.total_deleted)


async def dsar_export(target: str, tenant: str, customer: str, timeout: float) -> Timed:
    """CreateDsarRequest, then watch until completed; `detail` is the request id."""
    meta = metadata(tenant)
    async with _stub(target, dsar_pb2_grpc.DsarServiceStub) as stub:
        started = time.perf_counter()
        create = dsar_pb2.CreateDsarRequestRequest(request_type="export", subject_id=customer)
        request = (await stub.CreateDsarRequest(create, metadata=meta, timeout=30)).request
        async with asyncio.timeout(timeout):
            if request.status not in ("completed", "failed"):
                watch = dsar_pb2.WatchDsarRequestRequest(id=request.id)
                async for event in stub.WatchDsarRequest(watch, metadata=meta):
                    request = event.request
                    if request.status in ("completed", "failed"):
                        break
        seconds = time.perf_counter() - started
    if request.status != "completed":
        raise RuntimeError(f"DSAR export ended {request.status}: {request.error}")
    return Timed(seconds, 0, request.export_size_bytes, detail=request.id)


async def dsar_download(target: str, tenant: str, request_id: str, timeout: float) -> Timed:
    """StreamDsarExport of a finished export, every chunk read."""
    async with _stub(target, dsar_pb2_grpc.DsarServiceStub) as stub:
        started = time.perf_counter()
        request = dsar_pb2.StreamDsarExportRequest(id=request_id)
        chunks = stub.StreamDsarExport(request, metadata=metadata(tenant), timeout=timeout)
        size = sum([len(c.chunk.data) async for c in chunks])
        return Timed(time.perf_counter() - started, 0, size)


def noop_chain(nodes: int) -> dict[str, Any]:
    """An inline source, then nodes-1 no-op filters (keep every record), each on the previous."""
    definition_file = Path(__file__).resolve().parent.parent / "k6" / "lib" / "flow_definition.json"
    source, noop = json.loads(definition_file.read_text())["nodes"][:2]
    ids = [source["id"], *(f"noop_{i:04d}" for i in range(1, nodes))]
    chain = [{**noop, "id": ids[i], "dependsOn": [ids[i - 1]]} for i in range(1, nodes)]
    return {"name": f"perf-chain-{nodes}", "nodes": [source, *chain], "maxConcurrency": 1}


@dataclass
class FlowTimed(Timed):
    # From the run record: the run's start → end (includes StartRun's insert
    # and its commit), and the first node's start → the last node's end (the
    # executor's time on the nodes alone; no StartRun, no watcher's stream).
    run_seconds: float = 0.0
    nodes_seconds: float = 0.0


async def flow_run(target: str, tenant: str, nodes: int, timeout: float) -> FlowTimed:
    """Start a chain of `nodes` no-op nodes and watch it to RUN_FINISHED."""
    definition = json_format.ParseDict(noop_chain(nodes), flow_pb2.FlowDefinition())
    terminal = (flow_pb2.RUN_STATE_SUCCEEDED, flow_pb2.RUN_STATE_FAILED)
    meta = metadata(tenant)
    async with _stub(target, flow_pb2_grpc.FlowRunnerServiceStub) as stub:
        started = time.perf_counter()
        start = flow_pb2.StartRunRequest(definition=definition)
        run = (await stub.StartRun(start, metadata=meta, timeout=30)).run
        async with asyncio.timeout(timeout):
            if run.state not in terminal:
                watch = flow_pb2.WatchRunRequest(run_id=run.run_id)
                async for event in stub.WatchRun(watch, metadata=meta):
                    if event.type == flow_pb2.RUN_EVENT_TYPE_RUN_FINISHED or (
                        event.type == flow_pb2.RUN_EVENT_TYPE_SNAPSHOT
                        and event.run.state in terminal
                    ):
                        run = event.run
                        break
        seconds = time.perf_counter() - started
    if run.state != flow_pb2.RUN_STATE_SUCCEEDED:
        raise RuntimeError(f"flow run ended {flow_pb2.RunState.Name(run.state)}: {run.error}")
    recorded = (run.end_time.ToNanoseconds() - run.start_time.ToNanoseconds()) / 1e9
    first = min(n.start_time.ToNanoseconds() for n in run.nodes)
    span = (max(n.end_time.ToNanoseconds() for n in run.nodes) - first) / 1e9
    detail = f"run recorded {recorded:.4f}s, nodes {span:.4f}s"
    return FlowTimed(seconds, nodes, detail=detail, run_seconds=recorded, nodes_seconds=span)
