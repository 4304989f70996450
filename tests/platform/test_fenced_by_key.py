"""A row fenced by its state is found by its key, whatever the history (migration 0241).

The statements that update one row "if it is still running / processing /
pending" name it by its key and check the state. Every row that was ever in
that state keeps an entry under it in the indexes on state until a vacuum
removes it; a generic plan that went in through one of them walked them all:
ending a flow run took 4.8 ms at 18,000 runs on PostgreSQL 15 with autovacuum
off. Here ENDED rows are moved out of the state without a vacuum, then each
statement, planned as PL/pgSQL and asyncpg plan it at length (generic), before
and after ANALYZE, must find the one row still in the state through its key
and read a handful of pages.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest

from kaireon_server.dsar.repository import ABANDONED, OWNED
from kaireon_server.flow.repository import FINISH_RUN_SQL
from kaireon_server.platform.config import Settings
from kaireon_server.platform.db import connect_database
from kaireon_server.platform.db.migrate import load_migrations
from kaireon_server.requests.processor_repository import (
    GET_DELIVERY_SQL,
    MARK_DELIVERED_SQL,
    MARK_FAILED_SQL,
)
from tests.support.pg import create_database, drop_database

ENDED = 3_000
TENANT = "history"
CURRENT = "00000000-0000-0000-0000-000000000001"
# Pages one statement may read through the key (index and heap). Walking the
# ended rows' entries read over 30 at 3,000 rows, and grows with them.
MAX_PAGES = 20


def _migration_statement(table: str, nth: int, names: dict[str, int]) -> Callable[[], str]:
    """The `nth` UPDATE of `table` in migration 0241, its variables as parameters."""

    def statement() -> str:
        [migration] = [m for m in load_migrations() if m.name.startswith("0241_")]
        start = -1
        for _ in range(nth + 1):
            start = migration.sql.index(f"UPDATE {table}", start + 1)
        text = migration.sql[start : migration.sql.index(";", start)]
        for name, number in names.items():
            text = text.replace(name, f"${number}")
        return text

    return statement


@dataclass(frozen=True)
class Case:
    table: str
    # ENDED rows in the fenced state (one insert), then moved out of it.
    seed: str
    ended: str
    current: str  # the one row still in the state
    statement: Callable[[], str]
    parameters: str  # PREPARE's types
    arguments: str  # EXECUTE's literals
    index: str  # the way in: the key


_FLOW = dict(
    table="flow_run",
    seed="INSERT INTO flow_run (tenant_id, run_id, definition, definition_digest, state)"
    " SELECT $1, 'ended-' || i, '{}', 'd', 'running' FROM generate_series(1, $2) i",
    ended="UPDATE flow_run SET state = 'succeeded'",
    current="INSERT INTO flow_run (tenant_id, run_id, definition, definition_digest, state)"
    " VALUES ($1, 'current', '{}', 'd', 'running')",
    parameters="text, text, integer, text, text, timestamptz",
    arguments=f"'{TENANT}', 'current', 1, 'succeeded', '', now()",
    index="flow_run_pkey",
)
_DSAR = dict(
    table="dsar_request",
    seed="INSERT INTO dsar_request (tenant_id, id, request_type, subject_id, status,"
    " created_by, attempts, lease_owner) SELECT $1, gen_random_uuid(), 'export', 's',"
    " 'processing', 'x', 1, 'w' FROM generate_series(1, $2)",
    ended="UPDATE dsar_request SET status = 'completed'",
    current="INSERT INTO dsar_request (tenant_id, id, request_type, subject_id, status,"
    f" created_by, attempts, lease_owner) VALUES ($1, '{CURRENT}', 'export', 's',"
    " 'processing', 'x', 1, 'w')",
    index="dsar_request_pkey",
)
_REQUEST = dict(
    table="subject_request",
    seed="INSERT INTO subject_request (tenant_id, kind, subject_id, regulation, state, origin,"
    " received_at, due_date, created_by, dsar_request_id) SELECT $1, 'access', 's', 'gdpr',"
    " 'in_progress', 'direct', now(), current_date, 'x', gen_random_uuid()"
    " FROM generate_series(1, $2)",
    ended="UPDATE subject_request SET state = 'completed'",
    current="INSERT INTO subject_request (id, tenant_id, kind, subject_id, regulation, state,"
    " origin, received_at, due_date, created_by, dsar_request_id) VALUES"
    f" ('{CURRENT}', $1, 'access', 's', 'gdpr', 'in_progress', 'direct', now(), current_date,"
    f" 'x', '{CURRENT}')",
    parameters="text, uuid",
    arguments=f"'{TENANT}', '{CURRENT}'",
)
_OUTBOX = dict(
    table="processor_outbox",
    seed="INSERT INTO processor_outbox (tenant_id, recipient_id, event_type, subject_id,"
    f" payload) SELECT $1, '{CURRENT}', 'e', 's', 'p' FROM generate_series(1, $2)",
    ended="UPDATE processor_outbox SET status = 'delivered'",
    current="INSERT INTO processor_outbox (id, tenant_id, recipient_id, event_type, subject_id,"
    f" payload) VALUES ('{CURRENT}', $1, '{CURRENT}', 'e', 's', 'p')",
    index="processor_outbox_pkey",
)
FLOW_NAMES = {
    "p_tenant": 1, "p_run_id": 2, "p_attempt": 3, "p_state": 4, "p_error": 5, "p_ended_at": 6,
}  # fmt: skip
CASES = {
    "flow run end (kaireon_flow_finish_run)": Case(
        **_FLOW, statement=_migration_statement("flow_run", 0, FLOW_NAMES)
    ),
    "flow run end (repository)": Case(**_FLOW, statement=lambda: FINISH_RUN_SQL),
    "DSAR attempt that owns its job": Case(
        **_DSAR,
        statement=lambda: f"UPDATE dsar_request SET progress = 1 WHERE {OWNED}",
        parameters="text, uuid, text, integer",
        arguments=f"'{TENANT}', '{CURRENT}', 'w', 1",
    ),
    "DSAR job found abandoned": Case(
        **_DSAR,
        statement=lambda: f"UPDATE dsar_request SET progress = 1 WHERE {ABANDONED}",
        parameters="text, uuid",
        arguments=f"'{TENANT}', '{CURRENT}'",
    ),
    "request completed by its export (trigger)": Case(
        **_REQUEST,
        statement=_migration_statement("subject_request", 0, {"NEW.tenant_id": 1, "NEW.id": 2}),
        index="subject_request_dsar_idx",
    ),
    "request completed once notified (trigger)": Case(
        **_REQUEST,
        statement=_migration_statement(
            "subject_request", 1, {"NEW.tenant_id": 1, "NEW.request_id": 2}
        ),
        index="subject_request_pkey",
    ),
    "webhook delivery read": Case(
        **_OUTBOX,
        statement=lambda: GET_DELIVERY_SQL,
        parameters="text, uuid",
        arguments=f"'{TENANT}', '{CURRENT}'",
    ),
    "webhook delivered": Case(
        **_OUTBOX,
        statement=lambda: MARK_DELIVERED_SQL,
        parameters="text, uuid, integer",
        arguments=f"'{TENANT}', '{CURRENT}', 200",
    ),
    "webhook failed": Case(
        **_OUTBOX,
        statement=lambda: MARK_FAILED_SQL,
        parameters="text, uuid, integer, text, double precision",
        arguments=f"'{TENANT}', '{CURRENT}', 500, 'e', 5",
    ),
}


@pytest.fixture(scope="module")
async def ended_rows(pg_admin_dsn: str) -> AsyncIterator[str]:
    """A database of this module's own, its every fenced table holding ENDED rows
    moved out of the state without a vacuum, and no statistics yet."""
    dsn = await create_database(pg_admin_dsn, prefix="kaireon_fenced")
    db = await connect_database(
        Settings.from_env({"DATABASE_URL": dsn, "KAIREON_TRUST_HEADERS": "true"})
    )
    await db.close()
    owner = await asyncpg.connect(dsn)
    try:
        for case in {case.table: case for case in CASES.values()}.values():
            await owner.execute(f"ALTER TABLE {case.table} SET (autovacuum_enabled = false)")
            async with owner.transaction():
                # Rows only: their triggers (audit, notifications) are not under test.
                await owner.execute("SET LOCAL session_replication_role = replica")
                await owner.execute(case.seed, TENANT, ENDED)
                await owner.execute(case.ended)
    finally:
        await owner.close()
    yield dsn
    await drop_database(pg_admin_dsn, dsn)


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


async def _explained(owner: asyncpg.Connection, case: Case) -> dict[str, Any]:
    """The statement's generic plan, run on the current row, then rolled back."""
    tx = owner.transaction()
    await tx.start()
    prepared = False
    try:
        await owner.execute("SET LOCAL session_replication_role = replica")
        await owner.execute(case.current, TENANT)
        await owner.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        await owner.execute(f"PREPARE fenced({case.parameters}) AS {case.statement()}")
        prepared = True
        explained = await owner.fetchval(
            f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) EXECUTE fenced({case.arguments})"
        )
        plan: dict[str, Any] = json.loads(explained)[0]["Plan"]
        return plan
    finally:
        await tx.rollback()
        if prepared:  # a session's, not the transaction's
            await owner.execute("DEALLOCATE fenced")


def _faults(case: Case, plan: dict[str, Any]) -> list[str]:
    scans = [
        n for n in _nodes(plan) if n.get("Relation Name") == case.table and "Scan" in n["Node Type"]
    ]
    ways = [n.get("Index Name") for n in scans]
    if ways != [case.index]:
        return [f"went in through {ways}, not {case.index}"]
    faults = []
    if scans[0]["Actual Rows"] != 1:
        faults.append(f"found {scans[0]['Actual Rows']} rows, not the one in the state")
    pages = scans[0]["Shared Hit Blocks"] + scans[0].get("Shared Read Blocks", 0)
    if pages > MAX_PAGES:
        faults.append(f"read {pages} pages")
    return faults


async def test_a_fenced_row_is_found_by_its_key_whatever_the_rows_before_it(
    ended_rows: str,
) -> None:
    """Every statement, first with no statistics on its table, then after ANALYZE
    (one database: the statements of a table share its statistics)."""
    owner = await asyncpg.connect(ended_rows)
    faults: list[str] = []
    try:
        for when in ("no statistics", "analyzed"):
            if when == "analyzed":
                for table in sorted({case.table for case in CASES.values()}):
                    await owner.execute(f"ANALYZE {table}")
            for name, case in sorted(CASES.items()):
                plan = await _explained(owner, case)
                faults += [f"{name} ({when}): {fault}" for fault in _faults(case, plan)]
    finally:
        await owner.close()
    assert not faults, "\n".join(faults)
