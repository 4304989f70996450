"""Helpers of the erasure tests: row-count snapshots, calls, error details."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import grpc
from google.protobuf import json_format
from google.rpc import error_details_pb2, status_pb2

from kaireon.audit.v1 import audit_pb2, audit_pb2_grpc
from kaireon.erasure.v1 import erasure_pb2, erasure_pb2_grpc
from kaireon_server.demo.seed import SeedSize
from kaireon_server.platform import data_map
from kaireon_server.platform.db import Database
from tests.support.server import metadata

SMALL = SeedSize(customers=4, interactions_per_customer=5, decisions_per_customer=2)

# (table, customer) -> rows
Snapshot = Counter[tuple[str, str]]


async def add_dsar_export(db: Database, tenant: str, customer: str, chunks: int = 2) -> None:
    """A completed DSAR export of `customer`: its request row and stored chunks."""
    request_id = uuid.uuid4()
    async with db.transaction(tenant) as con:
        await con.execute(
            "INSERT INTO dsar_request (tenant_id, id, request_type, subject_id, status, "
            "progress, created_by, completed_at, export_attempt, export_chunks) "
            "VALUES ($1, $2, 'export', $3, 'completed', 100, 'test', now(), 1, $4)",
            tenant,
            request_id,
            customer,
            chunks,
        )
        await con.executemany(
            "INSERT INTO dsar_export_chunk (tenant_id, request_id, attempt, seq, subject_id, data) "
            "VALUES ($1, $2, 1, $3, $4, $5)",
            [(tenant, request_id, seq, customer, b'{"personal": true}') for seq in range(chunks)],
        )


async def _customer_tables(con: asyncpg.Connection, tenant: str) -> list[tuple[str, str]]:
    """(table, subject column) of every data-map table present, plus the tenant's ds_* tables."""
    names = [t.table for t in data_map.TABLES]
    present = {
        r["name"]
        for r in await con.fetch(
            "SELECT name FROM unnest($1::text[]) name WHERE to_regclass(name) IS NOT NULL", names
        )
    }
    tables = [(t.table, t.subject_column) for t in data_map.TABLES if t.table in present]
    for rec in await con.fetch(
        "SELECT c.table_name FROM information_schema.columns c "
        "WHERE c.table_name LIKE $1 AND c.column_name = 'customer_id'",
        f"ds\\_{tenant}\\_%",
    ):
        tables.append((rec["table_name"], "customer_id"))
    return tables


async def snapshot(db: Database, tenant: str) -> Snapshot:
    """Row counts per (table, subject) of one tenant, across every customer-data table."""
    counts: Snapshot = Counter()
    async with db.owner_connection() as con:
        for table, column in await _customer_tables(con, tenant):
            rows = await con.fetch(
                f'SELECT "{column}" AS subject, count(*) AS n FROM "{table}" '
                f'WHERE tenant_id = $1 AND "{column}" IS NOT NULL GROUP BY 1',
                tenant,
            )
            for r in rows:
                counts[(table, str(r["subject"]))] = int(r["n"])
    return counts


def only(snap: Snapshot, customer: str) -> dict[str, int]:
    return {table: n for (table, subject), n in snap.items() if subject == customer}


def without(snap: Snapshot, customer: str) -> dict[tuple[str, str], int]:
    return {key: n for key, n in snap.items() if key[1] != customer}


async def erase(
    stub: erasure_pb2_grpc.ErasureServiceStub,
    tenant: str,
    customer: str,
    *,
    dry_run: bool = False,
    role: str = "admin",
    timeout: float | None = None,
) -> erasure_pb2.EraseCustomerResponse:
    response: erasure_pb2.EraseCustomerResponse = await stub.EraseCustomer(
        erasure_pb2.EraseCustomerRequest(customer_id=customer, dry_run=dry_run),
        metadata=metadata(tenant, role),
        timeout=timeout,
    )
    return response


def counts_json(response: erasure_pb2.EraseCustomerResponse) -> dict[str, int]:
    value: dict[str, Any] = json_format.MessageToDict(
        response.deleted_counts, always_print_fields_with_no_presence=True
    )
    return {k: int(v) for k, v in value.items()}


async def audit_events(
    audit_stub: audit_pb2_grpc.AuditServiceStub, tenant: str, action: str = ""
) -> list[audit_pb2.AuditEvent]:
    reply = await audit_stub.ListAuditEvents(
        audit_pb2.ListAuditEventsRequest(page_size=1000, action=action),
        metadata=metadata(tenant),
    )
    return list(reply.events)


async def chain_valid(audit_stub: audit_pb2_grpc.AuditServiceStub, tenant: str) -> bool:
    reply = await audit_stub.VerifyChain(audit_pb2.VerifyChainRequest(), metadata=metadata(tenant))
    return bool(reply.valid)


def error_reason(error: grpc.aio.AioRpcError) -> str:
    """The google.rpc.ErrorInfo reason of a failed call."""
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                info = error_details_pb2.ErrorInfo()
                if detail.Unpack(info):
                    return info.reason
    return ""


def field_violations(error: grpc.aio.AioRpcError) -> list[str]:
    fields: list[str] = []
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                bad = error_details_pb2.BadRequest()
                if detail.Unpack(bad):
                    fields += [v.field for v in bad.field_violations]
    return fields


@asynccontextmanager
async def row_locked(
    db: Database, tenant: str, table: str, customer: str
) -> AsyncIterator[asyncpg.Connection]:
    """Hold a lock on the customer's rows of `table` from another connection."""
    con = await asyncpg.connect(db.dsn)
    try:
        async with con.transaction():
            await con.execute(
                f'SELECT 1 FROM "{table}" WHERE tenant_id = $1 AND customer_id = $2 FOR UPDATE',
                tenant,
                customer,
            )
            yield con
    finally:
        await con.close()


async def waiting_backend(con: asyncpg.Connection, table: str) -> int:
    """The pid of the erasure's backend once it waits on the lock in `table`."""
    for _ in range(200):
        # Inside a transaction pg_stat_activity is a frozen snapshot: refresh it.
        await con.execute("SELECT pg_stat_clear_snapshot()")
        pid = await con.fetchval(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND query LIKE $1",
            f'DELETE FROM "{table}"%',
        )
        if pid:
            return int(pid)
        await asyncio.sleep(0.05)
    raise AssertionError("the erasure never waited on the lock")
