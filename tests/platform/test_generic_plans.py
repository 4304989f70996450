"""Every list and count on a tenant's history stays O(log n) in a generic plan.

PostgreSQL may switch a prepared statement to its generic plan after five
executions; a `$n IS NULL OR col = $n` predicate is then no index condition and
a page walks the table. Each statement here is prepared with
`plan_cache_mode = force_generic_plan` over 100,000 seeded rows per table and
run as the application role under row-level security; the test fails on a
sequential scan, on a sort (the index must give the order), or on any node
whose filter throws away more than a page of rows.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import date, datetime
from typing import Any

import asyncpg
import pytest

from kaireon_server.audit.repository import list_events_query
from kaireon_server.dsar import repository as dsar_repository
from kaireon_server.dsar.repository import list_requests_query
from kaireon_server.erasure.model import ACTION_ERASURE
from kaireon_server.erasure.repository import LIST_HOLDS_SQL, retained_rows_query
from kaireon_server.flow import repository as flow_repository
from kaireon_server.flow.hooks import RunState
from kaireon_server.flow.repository import list_runs_query
from kaireon_server.platform import data_map
from kaireon_server.platform.db.database import app_role_dsn
from kaireon_server.platform.db.migrate import apply_migrations
from kaireon_server.requests import repository as requests_repository
from kaireon_server.requests.model import State
from tests.support.pg import create_database, drop_database

ROWS = 100_000
PAGE = 50
SUBJECTS = 1_000  # 100 requests and audit rows per subject
KEYED = 1_000  # runs and requests with events: 100 events each


def _literal(value: object) -> str:
    """A quoted SQL literal (EXECUTE takes no bind parameters); test values only."""
    return "'" + str(value).replace("'", "''") + "'"


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


@pytest.fixture(scope="module")
async def plans_database(pg_admin_dsn: str) -> AsyncIterator[str]:
    """A database of this module's own: the plans follow the table statistics, which
    the rows other tests leave in the session database would change (and with
    them which tests ran before on the same xdist worker)."""
    dsn = await create_database(pg_admin_dsn, prefix="kaireon_plans")
    con = await asyncpg.connect(dsn)
    try:
        await apply_migrations(con)
    finally:
        await con.close()
    yield dsn
    await drop_database(pg_admin_dsn, dsn)


@pytest.fixture(scope="module")
async def big_tenant(plans_database: str) -> AsyncIterator[str]:
    """One tenant with ROWS DSAR requests, flow runs and audit rows (generate_series)."""
    tenant = f"big{uuid.uuid4().hex[:8]}"
    owner = await asyncpg.connect(plans_database)
    try:
        async with owner.transaction():
            # No triggers (DSAR events and notifications, which would wake the
            # session's workers): these rows exist only to be planned over.
            await owner.execute("SET LOCAL session_replication_role = replica")
            await owner.execute(
                """
                INSERT INTO dsar_request (tenant_id, id, request_type, subject_id, status,
                                          created_by, created_at, updated_at)
                SELECT $1, gen_random_uuid(), 'export', 'subj_' || (i % $3),
                       CASE WHEN i % 100 = 0 THEN 'failed' ELSE 'completed' END,
                       'seed', t, t
                  FROM generate_series(1, $2) i,
                       LATERAL (SELECT timestamptz '2026-01-01' + i * interval '1 second' AS t) ts
                """,
                tenant,
                ROWS,
                SUBJECTS,
            )
            await owner.execute(
                """
                INSERT INTO flow_run (tenant_id, run_id, definition, definition_digest, state,
                                      created_at)
                SELECT $1, 'run-' || i, '{}'::jsonb, 'd',
                       CASE WHEN i % 100 = 0 THEN 'failed' ELSE 'succeeded' END,
                       timestamptz '2026-01-01' + i * interval '1 second'
                  FROM generate_series(1, $2) i
                """,
                tenant,
                ROWS,
            )
            # Every fifth row an erasure record (the per-subject count must not
            # walk them all), one in a hundred an export access.
            await owner.execute(
                """
                INSERT INTO audit_log (tenant_id, seq, id, action, entity_type, entity_id, actor,
                                       changes, prev_hash, integrity_hash, created_at,
                                       subject_id, subject_id_digest)
                SELECT $1, i, gen_random_uuid(),
                       CASE WHEN i % 5 = 0 THEN $4
                            WHEN i % 100 = 1 THEN 'dsar_export_downloaded'
                            ELSE 'decision_provenance_emit' END,
                       CASE WHEN i % 5 = 0 THEN 'customer'
                            WHEN i % 100 = 1 THEN 'dsar_request'
                            ELSE 'decision' END,
                       'e' || i, 'seed',
                       CASE WHEN i % 200 = 1 THEN '{"via": "inline"}'::jsonb
                            ELSE '{"via": "download"}'::jsonb END, 'p', 'h',
                       timestamptz '2026-01-01' + i * interval '1 second', 'subj_' || (i % $3),
                       repeat('d', 64)
                  FROM generate_series(1, $2) i
                """,
                tenant,
                ROWS,
                SUBJECTS,
                ACTION_ERASURE,
            )
            await owner.execute(
                "INSERT INTO flow_run_event (tenant_id, run_id, seq, attempt, type) "
                "SELECT $1, 'run-' || (i % $3), i / $3, 1, 'node' FROM generate_series(1, $2) i",
                tenant,
                ROWS,
                KEYED,
            )
            await owner.execute(
                "INSERT INTO dsar_request_event (tenant_id, request_id, version, status, "
                "progress, created_at) "
                "SELECT $1, md5('r' || (i % $3))::uuid, i / $3, 'processing', 0, now() "
                "FROM generate_series(1, $2) i",
                tenant,
                ROWS,
                KEYED,
            )
            # Lifecycle requests: received one a second, due dates over ~1000
            # days, states mixed (running, executing, terminal).
            await owner.execute(
                """
                INSERT INTO subject_request (tenant_id, kind, subject_id, regulation, state,
                                             origin, received_at, due_date, created_by)
                SELECT $1, CASE WHEN i % 2 = 0 THEN 'access' ELSE 'erasure' END,
                       'subj_' || (i % $3), 'gdpr',
                       (ARRAY['received', 'awaiting_approval', 'in_progress', 'completed',
                              'cancelled'])[i % 5 + 1],
                       'lifecycle', timestamptz '2026-01-01' + i * interval '1 second',
                       date '2026-01-01' + i / 100, 'seed'
                  FROM generate_series(1, $2) i
                """,
                tenant,
                ROWS,
                SUBJECTS,
            )
            # Erasure events of one processor (the erasure's retained count reads them).
            await owner.execute(
                "INSERT INTO processor_recipient (tenant_id, id, name, url, signing_secret, "
                "created_by) VALUES ($1, $2, 'seed', 'https://p.example/', 'whsec_AA', 'seed')",
                tenant,
                uuid.UUID(int=1),
            )
            await owner.execute(
                "INSERT INTO processor_outbox (tenant_id, recipient_id, event_type, subject_id, "
                "payload, status) SELECT $1, $2, 'subject.erased', 'subj_' || (i % $4), '{}', "
                "'delivered' FROM generate_series(1, $3) i",
                tenant,
                uuid.UUID(int=1),
                ROWS,
                SUBJECTS,
            )
            await owner.execute(
                "INSERT INTO legal_hold (tenant_id, customer_id, reason, created_by) "
                "SELECT $1, 'cust_' || lpad(i::text, 6, '0'), 'r', 'seed' "
                "FROM generate_series(1, $2) i",
                tenant,
                ROWS,
            )
        await owner.execute(
            "ANALYZE dsar_request, dsar_request_event, flow_run, flow_run_event, audit_log, "
            "legal_hold, subject_request, processor_outbox, processor_recipient"
        )
        yield tenant
    finally:
        async with owner.transaction():
            await owner.execute("SET LOCAL session_replication_role = replica")
            for table in (
                "audit_log",
                "flow_run_event",
                "flow_run",
                "dsar_request_event",
                "dsar_request",
                "legal_hold",
                "subject_request",
                "processor_outbox",
                "processor_recipient",
            ):
                await owner.execute(f"DELETE FROM {table} WHERE tenant_id = $1", tenant)
        await owner.close()


@pytest.fixture(scope="module")
async def positions(plans_database: str, big_tenant: str) -> dict[str, Any]:
    """Keyset positions 90% deep into each list (what a deep page token holds)."""
    owner = await asyncpg.connect(plans_database)
    try:
        deep = ROWS * 9 // 10
        dsar = await owner.fetchrow(
            "SELECT created_at, id FROM dsar_request WHERE tenant_id = $1 "
            "ORDER BY created_at DESC, id DESC OFFSET $2 LIMIT 1",
            big_tenant,
            deep,
        )
        run = await owner.fetchrow(
            "SELECT created_at, run_id FROM flow_run WHERE tenant_id = $1 "
            "ORDER BY created_at DESC, run_id DESC OFFSET $2 LIMIT 1",
            big_tenant,
            deep,
        )
    finally:
        await owner.close()
    assert dsar is not None and run is not None
    return {"dsar": (dsar["created_at"], dsar["id"]), "run": (run["created_at"], run["run_id"])}


def _statements(tenant: str, at: dict[str, Any]) -> dict[str, tuple[str, list[Any], bool]]:
    """name -> (sql, args, ordered list); the lists of every repository."""
    dsar_after: tuple[datetime, uuid.UUID] = at["dsar"]
    run_after: tuple[datetime, str] = at["run"]
    kept = [
        (t.table, t.subject_column)
        for t in data_map.retained_tables()
        if t.erasure is data_map.ErasureAction.RETAIN
    ]
    out: dict[str, tuple[str, list[Any], bool]] = {}
    for status in (None, "failed"):
        for subject in (None, "subj_7"):
            for after in (None, dsar_after):
                sql, args = list_requests_query(
                    tenant, status=status, subject_id=subject, after=after, limit=PAGE + 1
                )
                name = f"dsar status={status} subject={subject} deep={after is not None}"
                out[name] = (sql, args, True)
    for state in (None, RunState.FAILED, RunState.RUNNING):
        for run_pos in (None, run_after):
            sql, args = list_runs_query(tenant, limit=PAGE + 1, after=run_pos, state=state)
            out[f"runs state={state} deep={run_pos is not None}"] = (sql, args, True)
    for action in (None, ACTION_ERASURE, "dsar_export_downloaded"):
        for entity in (None, "customer", "dsar_request"):
            for seq in (0, ROWS * 9 // 10):
                sql, args = list_events_query(
                    tenant, after_seq=seq, limit=PAGE + 1, action=action, entity_type=entity
                )
                out[f"audit action={action} entity={entity} after={seq}"] = (sql, args, True)
    # Lifecycle requests: every filter combination, first page and deep.
    received_after = (datetime.fromisoformat("2026-01-01T02:46:40+00:00"), uuid.UUID(int=0))
    due_after = (date(2027, 5, 16), uuid.UUID(int=0))
    for state in (None, State.RECEIVED, State.COMPLETED):
        for due_before in (None, date(2028, 6, 1)):
            for deep in (False, True):
                request_after = (due_after if due_before else received_after) if deep else None
                sql, args = requests_repository.list_query(
                    tenant, state=state, due_before=due_before, after=request_after, limit=PAGE + 1
                )
                name = f"requests state={state} due_before={due_before} deep={deep}"
                out[name] = (sql, args, True)
    sql, args = retained_rows_query(kept, tenant, "subj_7")
    out["erasure retained counts"] = (sql, args, False)
    out["legal holds deep"] = (LIST_HOLDS_SQL, [tenant, "cust_090000", PAGE + 1], True)
    out["flow run events after"] = (
        flow_repository.EVENTS_AFTER_SQL,
        [tenant, "run-7", 10, PAGE],
        True,
    )
    # The poll path: which exports of a page the caller already received inline.
    out["dsar inline disclosed"] = (
        dsar_repository.INLINE_DISCLOSED_SQL,
        [tenant, "{" + ",".join(f"e{i}" for i in range(101, 5101, 100)) + "}", "seed"],
        False,
    )
    return out


@pytest.mark.timeout(300)
async def test_every_list_query_uses_an_index_in_its_generic_plan(
    plans_database: str, big_tenant: str, positions: dict[str, Any]
) -> None:
    con = await asyncpg.connect(app_role_dsn(plans_database))
    problems: list[str] = []
    try:
        await con.execute("SET plan_cache_mode = force_generic_plan")
        for n, (name, (sql, args, ordered)) in enumerate(
            _statements(big_tenant, positions).items()
        ):
            async with con.transaction():
                await con.execute("SELECT set_config('kaireon.tenant_id', $1, true)", big_tenant)
                await con.execute(f"PREPARE q{n} AS {sql}")
                values = ", ".join(_literal(a) for a in args)
                raw = await con.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE q{n}({values})")
                await con.execute(f"DEALLOCATE q{n}")
            plan = json.loads(raw)[0]["Plan"]
            text = json.dumps(plan)
            # A generic plan keeps the parameters symbolic.
            if "$1" not in text:
                problems.append(f"{name}: not a generic plan")
            for node in _nodes(plan):
                kind = node["Node Type"]
                removed = node.get("Rows Removed by Filter", 0) + node.get(
                    "Rows Removed by Index Recheck", 0
                )
                if kind == "Seq Scan":
                    problems.append(f"{name}: sequential scan on {node.get('Relation Name')}")
                if ordered and kind in ("Sort", "Incremental Sort"):
                    problems.append(f"{name}: sorts (no index gives the order)")
                if removed > PAGE:
                    problems.append(
                        f"{name}: {kind} on {node.get('Relation Name') or node.get('Index Name')}"
                        f" filters out {removed} rows"
                    )
    finally:
        await con.close()
    assert not problems, "\n".join(problems)


async def test_the_check_catches_a_catch_all_predicate(
    plans_database: str, big_tenant: str
) -> None:
    """The old `$n IS NULL OR ...` shape fails the same check: the test can fail."""
    con = await asyncpg.connect(app_role_dsn(plans_database))
    try:
        await con.execute("SET plan_cache_mode = force_generic_plan")
        async with con.transaction():
            await con.execute("SELECT set_config('kaireon.tenant_id', $1, true)", big_tenant)
            await con.execute(
                "PREPARE old_shape AS SELECT id FROM dsar_request WHERE tenant_id = $1 "
                "AND ($2::text IS NULL OR status = $2) ORDER BY created_at DESC, id DESC LIMIT $3"
            )
            raw = await con.fetchval(
                "EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE "
                f"old_shape({_literal(big_tenant)}, 'failed', {PAGE})"
            )
            await con.execute("DEALLOCATE old_shape")
    finally:
        await con.close()
    removed = sum(n.get("Rows Removed by Filter", 0) for n in _nodes(json.loads(raw)[0]["Plan"]))
    assert removed > PAGE
