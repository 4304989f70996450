"""Scale benchmark: how each RPC's latency grows with the tenant's history.

    .venv/bin/python perf/scale_bench.py                 # 10,000 and 100,000 rows
    .venv/bin/python perf/scale_bench.py --large --contention  # 100,000 and 1,000,000
    .venv/bin/python perf/scale_bench.py --sizes 5000,50000 --reps 15

Starts the real server in-process (gRPC on a free port, DATABASE_URL or an
embedded PostgreSQL in a temporary directory, DSAR workers and the log
integrator off), then for each size N seeds a fresh tenant: the demo seed
(3 customers, their decisions and audit rows), then with `generate_series`, as
the owner and without triggers, N DSAR requests (1% failed; the newest 50
completed ones with a small stored export, attached inline by the polling call),
N flow runs (1% failed), N interaction rows and N decision traces over N/100
other customers; and N hash-chained audit rows through the server's writer
(a fifth `gdpr_erasure`, one in a hundred export accesses). It then integrates
them into the transparency log and verifies chain and log in full (those full
runs are timed: proportional to the log by design), then VACUUM ANALYZE.

Each RPC is called --reps times per size after 3 warm-up calls, the two sizes
taking turns, and the median is kept; the incremental verifications get 100 new
rows before each call. The last column is the growth factor large/small: about
1 for an O(log n) call, about 10 for O(n). --contention then measures, from a
separate process, other calls' p50/p99 idle and during a full StreamVerifyLog
of the large tenant.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import grpc

from kaireon.audit.v1 import audit_pb2, audit_pb2_grpc
from kaireon.dsar.v1 import dsar_pb2, dsar_pb2_grpc
from kaireon.erasure.v1 import erasure_pb2, erasure_pb2_grpc
from kaireon.flow.v1 import flow_pb2, flow_pb2_grpc
from kaireon.provenance.v1 import provenance_pb2, provenance_pb2_grpc
from kaireon_server.app import App
from kaireon_server.audit.tlog import Integrator, TlogSettings
from kaireon_server.demo.seed import SeedSize, seed_tenant
from kaireon_server.platform.audit_chain import AuditRow, insert_rows
from kaireon_server.platform.canonical import format_timestamp
from kaireon_server.platform.config import Settings
from kaireon_server.platform.paging import encode_token
from kaireon_testkit.keys import write_signing_key

WARMUP = 3
PAGE = 50  # every list asks for a full page at both sizes (1% of 10,000 rows = 100)
DECISION = "dec_00001_1"  # a demo-seed decision: its bundle cites catalogue rows

_SEED = [
    # DSAR requests: completed (no stored export), 1% failed, 100 per subject.
    """
    INSERT INTO dsar_request (tenant_id, id, request_type, subject_id, status, created_by,
                              created_at, updated_at, completed_at)
    SELECT $1, gen_random_uuid(), 'export', 'bulk_' || (i % ($2 / 100)),
           CASE WHEN i % 100 = 0 THEN 'failed' ELSE 'completed' END, 'seed', t, t, t
      FROM generate_series(1, $2) i,
           LATERAL (SELECT timestamptz '2026-01-01' + i * interval '1 second' AS t) ts
    """,
    """
    INSERT INTO flow_run (tenant_id, run_id, definition, definition_digest, state, created_at,
                          started_at, ended_at)
    SELECT $1, 'bulk-run-' || i, '{}'::jsonb, 'seed',
           CASE WHEN i % 100 = 0 THEN 'failed' ELSE 'succeeded' END, t, t, t
      FROM generate_series(1, $2) i,
           LATERAL (SELECT timestamptz '2026-01-01' + i * interval '1 second' AS t) ts
    """,
    """
    INSERT INTO interaction_history (tenant_id, customer_id, offer_id, channel, event_type,
                                     occurred_at)
    SELECT $1, 'bulk_' || (i % ($2 / 100)), 'OFFER_A', 'web', 'impression',
           timestamptz '2026-01-01' + i * interval '1 second'
      FROM generate_series(1, $2) i
    """,
    """
    INSERT INTO decision_trace (tenant_id, id, customer_id, decided_at, channel)
    SELECT $1, 'bulkdec_' || i, 'bulk_' || (i % ($2 / 100)),
           timestamptz '2026-01-01' + i * interval '1 second', 'web'
      FROM generate_series(1, $2) i
    """,
]

# The 50 newest completed requests get a small stored export, so the polling
# call (`status=completed`) attaches 50 exports inline as in production.
_SEED_EXPORTS = [
    """
    INSERT INTO dsar_export_chunk (tenant_id, request_id, attempt, seq, subject_id, data)
    SELECT $1, r.id, 1, 0, r.subject_id, convert_to(
               '{"counts":{},"customerId":' || to_json(r.subject_id)::text
               || ',"data":{},"encrypted":false,"exportedAt":"2026-01-01T00:00:00.000000Z",'
               || '"requestId":"' || r.id || '"}', 'UTF8')
      FROM (SELECT id, subject_id FROM dsar_request WHERE tenant_id = $1 AND status = 'completed'
             ORDER BY created_at DESC, id DESC LIMIT $2) r
    """,
    """
    UPDATE dsar_request r SET export_attempt = 1, export_chunks = 1,
           export_size = octet_length(c.data), export_rows = 0,
           export_digest = encode(sha256(c.data), 'hex')
      FROM dsar_export_chunk c
     WHERE r.tenant_id = $1 AND c.tenant_id = $1 AND c.request_id = r.id AND $2 > 0
    """,
]

AUDIT_BATCH = 5000  # rows per seeding transaction (the integrator's batch too)
NEW_ROWS = 100  # rows appended before each incremental verification call
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _audit_row(i: int, rows: int) -> AuditRow:
    """Bulk audit row i: a fifth `gdpr_erasure` (personal entity id), one in a
    hundred export accesses, the rest provenance emissions; 100 per subject."""
    subject = f"bulk_{i % (rows // 100)}"
    when = T0 + timedelta(seconds=i)
    if i % 5 == 0:
        return AuditRow(
            "gdpr_erasure",
            "customer",
            subject,
            "seed",
            entity_id_is_personal=True,
            subject_id=subject,
            now=when,
        )
    action, kind = (
        ("dsar_export_downloaded", "dsar_request")
        if i % 100 == 1
        else ("decision_provenance_emit", "decision")
    )
    return AuditRow(action, kind, f"bulkdec_{i}", "seed", subject_id=subject, now=when)


async def _append(app: App, tenant: str, rows: list[AuditRow]) -> None:
    """Hash-chained rows through the server's own writer (`insert_rows`), triggers off."""
    assert app.db is not None
    async with app.db.owner_connection() as con, con.transaction():
        await con.execute("SET LOCAL session_replication_role = replica")
        await insert_rows(con, tenant, rows)


async def _seed_audit(app: App, tenant: str, rows: int) -> None:
    for first in range(1, rows + 1, AUDIT_BATCH):
        last = min(first + AUDIT_BATCH, rows + 1)
        await _append(app, tenant, [_audit_row(i, rows) for i in range(first, last)])


def _env(workdir: Path) -> dict[str, str]:
    key_path = write_signing_key(workdir / "bench-signing.key")
    env = {
        "KAIREON_TRUST_HEADERS": "true",
        "KAIREON_GRPC_HOST": "127.0.0.1",
        "KAIREON_GRPC_PORT": "0",
        "KAIREON_HTTP_PORT": "0",
        "KAIREON_DATA_DIR": str(workdir / "data"),
        "KAIREON_LOG_LEVEL": "WARNING",
        "KAIREON_DSAR_WORKERS": "0",
        # The benchmark integrates the log itself, between measurements.
        "KAIREON_TLOG_INTEGRATOR": "false",
        "COSIGN_KEY": str(key_path),
    }
    if os.environ.get("DATABASE_URL"):
        env["DATABASE_URL"] = os.environ["DATABASE_URL"]
    return env


async def _seed(app: App, tenant: str, rows: int) -> dict[str, Any]:
    """Seed one tenant; returns the positions the deep-page calls start from."""
    assert app.db is not None
    await seed_tenant(app.db, tenant, SeedSize(customers=3, interactions_per_customer=5))
    deep = rows * 9 // 10
    async with app.db.owner_connection() as con, con.transaction():
        # Owner connection: no triggers (DSAR events and notifications).
        await con.execute("SET LOCAL session_replication_role = replica")
        await con.execute("SELECT set_config('kaireon.tenant_id', $1, true)", tenant)
        for statement in _SEED:
            await con.execute(statement, tenant, rows)
        for statement in _SEED_EXPORTS:
            await con.execute(statement, tenant, PAGE)
        head = await con.fetchval("SELECT seq FROM audit_chain_head WHERE tenant_id = $1", tenant)
    await _seed_audit(app, tenant, rows)
    async with app.db.owner_connection() as con:
        dsar = await con.fetchrow(
            "SELECT id, created_at FROM dsar_request WHERE tenant_id = $1 AND status = 'completed'"
            " ORDER BY created_at DESC, id DESC OFFSET $2 LIMIT 1",
            tenant,
            deep,
        )
        run = await con.fetchrow(
            "SELECT run_id, created_at FROM flow_run WHERE tenant_id = $1"
            " ORDER BY created_at DESC, run_id DESC OFFSET $2 LIMIT 1",
            tenant,
            deep,
        )
    assert dsar is not None and run is not None
    return {
        "dsar_id": str(dsar["id"]),
        "dsar_token": encode_token({"c": dsar["created_at"].isoformat(), "i": str(dsar["id"])}),
        "run_id": run["run_id"],
        "run_token": encode_token({"c": format_timestamp(run["created_at"]), "r": run["run_id"]}),
        "audit_token": encode_token({"seq": head + deep}),
        "leaf": head + deep,
    }


async def _catch_up(
    app: App, integrator: Integrator, channel: grpc.aio.Channel, tenant: str, at: dict[str, Any]
) -> dict[str, float]:
    """Integrate the seeded rows into the tenant's log, run both verifications to the
    head (the full runs, timed), then VACUUM ANALYZE; the incremental calls measured
    afterwards start from there."""
    assert app.db is not None
    audit = audit_pb2_grpc.AuditServiceStub(channel)
    admin = (("x-tenant-id", tenant), ("x-user-role", "admin"))
    timings: dict[str, float] = {}
    started = time.perf_counter()
    await integrator.integrate(tenant)
    timings["integrate"] = time.perf_counter() - started
    started = time.perf_counter()
    while (reply := await audit.VerifyChain(audit_pb2.VerifyChainRequest(), metadata=admin)).more:
        pass
    assert reply.valid, reply
    timings["VerifyChain"] = time.perf_counter() - started
    started = time.perf_counter()
    while (log := await audit.VerifyLog(audit_pb2.VerifyLogRequest(), metadata=admin)).more:
        pass
    assert log.valid, log
    timings["VerifyLog"] = time.perf_counter() - started
    timings["rows"] = float(log.tree_size)
    async with app.db.owner_connection() as con:
        # Autovacuum of the fresh rows would otherwise run during the measurements
        # (on 2 cores that alone doubles some latencies).
        await con.execute("VACUUM ANALYZE")
        at["half"] = await con.fetchval(
            "SELECT size FROM audit_tlog_checkpoint WHERE tenant_id = $1"
            " ORDER BY abs(size - $2) LIMIT 1",
            tenant,
            log.tree_size // 2,
        )
        at["size"] = log.tree_size
    return timings


Call = Callable[[], Awaitable[Any]]


def _calls(channel: grpc.aio.Channel, tenant: str, at: dict[str, Any]) -> dict[str, Call]:
    op = (("x-tenant-id", tenant), ("x-user-role", "operator"))
    admin = (("x-tenant-id", tenant), ("x-user-role", "admin"))
    dsar = dsar_pb2_grpc.DsarServiceStub(channel)
    flow = flow_pb2_grpc.FlowRunnerServiceStub(channel)
    audit = audit_pb2_grpc.AuditServiceStub(channel)
    dsars, runs, events = dsar.ListDsarRequests, flow.ListRuns, audit.ListAuditEvents
    dsar_list, run_list = dsar_pb2.ListDsarRequestsRequest, flow_pb2.ListRunsRequest
    event_list = audit_pb2.ListAuditEventsRequest
    table: dict[str, tuple[Callable[..., Awaitable[Any]], Any, Any]] = {
        "DSAR create": (
            dsar.CreateDsarRequest,
            dsar_pb2.CreateDsarRequestRequest(request_type="export", subject_id="cust_00001"),
            op,
        ),
        "DSAR get": (dsar.GetDsarRequest, dsar_pb2.GetDsarRequestRequest(id=at["dsar_id"]), op),
        "DSAR list status=completed": (dsars, dsar_list(status="completed", page_size=PAGE), op),
        "DSAR list status=failed": (dsars, dsar_list(status="failed", page_size=PAGE), op),
        "DSAR list deep page": (
            dsars,
            dsar_list(status="completed", page_size=PAGE, page_token=at["dsar_token"]),
            op,
        ),
        "DSAR list subject": (dsars, dsar_list(subject_id="bulk_7", page_size=PAGE), op),
        "ListRuns": (runs, run_list(page_size=PAGE), op),
        "ListRuns state=failed": (
            runs,
            run_list(page_size=PAGE, state=flow_pb2.RUN_STATE_FAILED),
            op,
        ),
        "ListRuns state=running": (
            runs,
            run_list(page_size=PAGE, state=flow_pb2.RUN_STATE_RUNNING),
            op,
        ),
        "ListRuns deep page": (runs, run_list(page_size=PAGE, page_token=at["run_token"]), op),
        "GetRun": (flow.GetRun, flow_pb2.GetRunRequest(run_id=at["run_id"]), op),
        "ListAuditEvents": (events, event_list(page_size=PAGE), admin),
        "ListAuditEvents action=": (
            events,
            event_list(page_size=PAGE, action="dsar_export_downloaded"),
            admin,
        ),
        "ListAuditEvents deep page": (
            events,
            event_list(page_size=PAGE, page_token=at["audit_token"]),
            admin,
        ),
        "GetCheckpoint": (audit.GetCheckpoint, audit_pb2.GetCheckpointRequest(), admin),
        "GetInclusionProof": (
            audit.GetInclusionProof,
            audit_pb2.GetInclusionProofRequest(index=at["leaf"]),
            admin,
        ),
        "GetConsistencyProof": (
            audit.GetConsistencyProof,
            audit_pb2.GetConsistencyProofRequest(first_size=at["half"], second_size=at["size"]),
            admin,
        ),
        "ListEntries (50)": (
            audit.ListEntries,
            audit_pb2.ListEntriesRequest(start=at["leaf"], end=at["leaf"] + PAGE),
            admin,
        ),
        f"VerifyChain (+{NEW_ROWS} rows)": (
            audit.VerifyChain,
            audit_pb2.VerifyChainRequest(),
            admin,
        ),
        f"VerifyLog (+{NEW_ROWS} rows)": (audit.VerifyLog, audit_pb2.VerifyLogRequest(), admin),
        "erasure dry run": (
            erasure_pb2_grpc.ErasureServiceStub(channel).EraseCustomer,
            erasure_pb2.EraseCustomerRequest(customer_id="bulk_7", dry_run=True),
            admin,
        ),
        "provenance": _probe_table(channel, tenant)["provenance"],
    }
    return {name: partial(rpc, request, metadata=md) for name, (rpc, request, md) in table.items()}


def _new_rows(app: App, integrator: Integrator, tenant: str) -> dict[str, Call]:
    """Untimed steps before each call of the incremental verifications: NEW_ROWS
    fresh audit rows (and, for VerifyLog, their integration)."""

    async def append() -> None:
        await _append(app, tenant, [_audit_row(i, 100) for i in range(1, NEW_ROWS + 1)])

    async def append_and_integrate() -> None:
        await append()
        await integrator.integrate(tenant)

    return {
        f"VerifyChain (+{NEW_ROWS} rows)": append,
        f"VerifyLog (+{NEW_ROWS} rows)": append_and_integrate,
    }


async def _timed(call: Call) -> float:
    started = time.perf_counter()
    await call()
    return (time.perf_counter() - started) * 1000


async def _measure(calls: list[Call], before: list[Call | None], reps: int) -> list[float | str]:
    """Median milliseconds of each call (one per size), or the failing status
    code's name. The sizes take turns, in alternating order, so drift of a
    shared machine favours neither. `before` runs untimed ahead of each call."""
    times: list[list[float]] = [[] for _ in calls]
    try:
        for _ in range(WARMUP):
            for call in calls:
                await call()
        for n in range(reps):
            order = list(enumerate(calls))
            for i, call in order if n % 2 == 0 else reversed(order):
                if (prepare := before[i]) is not None:
                    await prepare()
                times[i].append(await _timed(call))
    except grpc.aio.AioRpcError as error:
        return [error.code().name for _ in calls]
    return [statistics.median(t) for t in times]


# --- other calls' latency while a full streamed verification runs -------------------

PROBE_SECONDS = 30.0  # idle probing, before and after the loaded window


def _probe_table(channel: grpc.aio.Channel, tenant: str) -> dict[str, tuple[Any, Any, Any]]:
    """The calls probed while a full verification runs (also rows of the table)."""
    admin = (("x-tenant-id", tenant), ("x-user-role", "admin"))
    return {
        "ListAuditEvents": (
            audit_pb2_grpc.AuditServiceStub(channel).ListAuditEvents,
            audit_pb2.ListAuditEventsRequest(page_size=PAGE),
            admin,
        ),
        "provenance": (
            provenance_pb2_grpc.ProvenanceServiceStub(channel).GetDecisionProvenance,
            provenance_pb2.GetDecisionProvenanceRequest(decision_id=DECISION),
            admin,
        ),
    }


def _probe_calls(channel: grpc.aio.Channel, tenant: str) -> dict[str, Call]:
    table = _probe_table(channel, tenant)
    return {name: partial(rpc, request, metadata=md) for name, (rpc, request, md) in table.items()}


async def _probe(port: int, tenant: str) -> None:
    """The prober (a separate process, so it does not share the server's GIL):
    the probe calls in turn until SIGINT; prints their latencies as JSON."""
    stopped = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGINT, stopped.set)
    times: dict[str, list[float]] = {}
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        calls = _probe_calls(channel, tenant)
        while not stopped.is_set():
            for name, call in calls.items():
                times.setdefault(name, []).append(await _timed(call))
    print(json.dumps(times))


async def _probed(port: int, tenant: str, until: Awaitable[Any]) -> dict[str, list[float]]:
    """Latencies of the probe calls, made from another process, while `until` runs."""
    prober = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--probe", str(port), tenant, stdout=asyncio.subprocess.PIPE
    )
    await asyncio.sleep(3)  # the prober's start-up (imports, channel) is not measured
    await until
    prober.send_signal(signal.SIGINT)
    out, _ = await prober.communicate()
    return dict(json.loads(out))


async def _stream_verify(channel: grpc.aio.Channel, tenant: str) -> tuple[float, int]:
    """One full StreamVerifyLog of the tenant: seconds and rows checked."""
    audit = audit_pb2_grpc.AuditServiceStub(channel)
    admin = (("x-tenant-id", tenant), ("x-user-role", "admin"))
    started = time.perf_counter()
    last = None
    async for message in audit.StreamVerifyLog(audit_pb2.StreamVerifyLogRequest(), metadata=admin):
        last = message
    assert last is not None and last.result.valid, last
    return time.perf_counter() - started, last.result.rows_checked


def _p(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else values[0]


async def _contention(app: App, channel: grpc.aio.Channel, tenant: str) -> list[str]:
    """p50/p99 of the probe calls idle, during a full streamed verification of the
    tenant's log, and idle again; the report lines."""
    idle = await _probed(app.grpc_port, tenant, asyncio.sleep(PROBE_SECONDS))
    verification = asyncio.ensure_future(_stream_verify(channel, tenant))
    loaded = await _probed(app.grpc_port, tenant, verification)
    seconds, rows = verification.result()
    after = await _probed(app.grpc_port, tenant, asyncio.sleep(PROBE_SECONDS))
    lines = [
        f"full StreamVerifyLog of {rows:,} rows: {seconds:.1f} s ({rows / seconds:,.0f} rows/s),"
        " other calls from another process meanwhile",
        f"{'call (p50 / p99 ms)':22}{'idle before':>22}{'verifying':>22}{'idle after':>22}"
        f"{'p99 ratio':>11}",
    ]
    for name in idle:
        cells = [(_p(t[name], 50), _p(t[name], 99), len(t[name])) for t in (idle, loaded, after)]
        ratio = cells[1][1] / max(cells[0][1], cells[2][1])
        lines.append(
            f"{name:22}"
            + "".join(f"{f'{a:.1f} / {b:.1f} (n={n})':>22}" for a, b, n in cells)
            + f"{ratio:10.2f}x"
        )
    return lines


async def run(args: argparse.Namespace) -> int:
    sizes: list[int] = args.sizes
    results: dict[int, dict[str, float | str]] = {}
    full: dict[int, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="kaireon-scale-bench-") as tmp:
        app = App(Settings.from_env(_env(Path(tmp))))
        await app.start()
        try:
            assert app.db is not None
            integrator = Integrator(app.db, TlogSettings())
            async with app.db.owner_connection() as con:
                version = await con.fetchval("SHOW server_version")
            async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
                tenants: list[dict[str, Call]] = []
                befores: list[dict[str, Call]] = []
                names: list[str] = []
                for size in sizes[-1:] if args.contention_only else sizes:
                    tenant = f"scale{secrets.token_hex(4)}"
                    names.append(tenant)
                    started = time.perf_counter()
                    at = await _seed(app, tenant, size)
                    seeded = time.perf_counter() - started
                    print(f"seeded {size:,} rows per table in {seeded:.1f} s", file=sys.stderr)
                    full[size] = await _catch_up(app, integrator, channel, tenant, at)
                    print(f"integrated and verified in full: {full[size]}", file=sys.stderr)
                    tenants.append(_calls(channel, tenant, at))
                    befores.append(_new_rows(app, integrator, tenant))
                for name in [] if args.contention_only else tenants[0]:
                    medians = await _measure(
                        [t[name] for t in tenants], [b.get(name) for b in befores], args.reps
                    )
                    for size, median in zip(sizes, medians, strict=True):
                        results.setdefault(size, {})[name] = median
                    print(f"measured {name}", file=sys.stderr)
                contention = await _contention(app, channel, names[-1]) if args.contention else []
            # What the polls wrote: access rows of the caller (the seed's are "seed").
            async with app.db.owner_connection() as con:
                access = [
                    await con.fetchval(
                        "SELECT count(*) FROM audit_log WHERE tenant_id = $1"
                        " AND action = 'dsar_export_downloaded' AND actor = 'operator@headers'",
                        tenant,
                    )
                    for tenant in names
                ]
        finally:
            await app.stop(grace=1)
    if args.contention_only:
        print(f"PostgreSQL {version}, {sizes[-1]:,} rows per table")
        print("\n".join(contention))
        return 0
    small, large = sizes
    print(
        f"scale benchmark: PostgreSQL {version}, {args.reps} calls per RPC (median), "
        f"{small:,} vs {large:,} rows per table"
    )
    head = f"{'RPC':28}{f'{small:,} rows':>14}{f'{large:,} rows':>16}{'growth':>9}"
    print(head)
    print("-" * len(head))
    worst = 0.0
    for name, first in results[small].items():
        second = results[large][name]
        if isinstance(first, float) and isinstance(second, float):
            growth = second / first
            worst = max(worst, growth)
            print(f"{name:28}{first:11.2f} ms{second:13.2f} ms{growth:8.2f}x")
        else:
            print(f"{name:28}{first!s:>14}{second!s:>16}{'-':>9}")
    print(f"largest growth factor: {worst:.2f}x (10x more rows)")
    polls = WARMUP + args.reps
    print(
        f"access rows written by {polls} polls of status=completed ({PAGE} exports inline"
        f" each), per size: {', '.join(str(a) for a in access)} (one per export shown)"
    )
    print("full runs (proportional to the log, by design):")
    for what in ("integrate", "VerifyChain", "VerifyLog"):
        cells = [(full[n]["rows"], full[n][what]) for n in sizes]
        print(
            f"  {what:12}"
            + "".join(f"{f'{r:,.0f} rows in {t:.1f} s ({r / t:,.0f}/s)':>36}" for r, t in cells)
        )
    for line in contention:
        print(line)
    return 1 if args.max_growth and worst > args.max_growth else 0


def _sizes(text: str) -> list[int]:
    sizes = [int(part) for part in text.split(",")]
    if len(sizes) != 2 or min(sizes) < 1000 or sizes[0] >= sizes[1]:
        raise argparse.ArgumentTypeError("two increasing sizes, each at least 1000")
    return sizes


def main() -> int:
    if sys.argv[1:2] == ["--probe"]:
        port, tenant = sys.argv[2:4]
        asyncio.run(_probe(int(port), tenant))
        return 0
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--sizes", type=_sizes, default=[10_000, 100_000], help="small,large rows per table"
    )
    parser.add_argument(
        "--large", action="store_true", help="100,000 and 1,000,000 rows (overrides --sizes)"
    )
    parser.add_argument("--reps", type=int, default=25, help="measured calls per RPC")
    parser.add_argument(
        "--max-growth", type=float, default=0.0, help="exit 1 when a growth factor exceeds this"
    )
    parser.add_argument(
        "--contention",
        action="store_true",
        help="also: other calls' p50/p99 idle vs during a full StreamVerifyLog of the large tenant",
    )
    parser.add_argument(
        "--contention-only", action="store_true", help="only the large tenant and --contention"
    )
    args = parser.parse_args()
    args.contention |= args.contention_only
    if args.large:
        args.sizes = [100_000, 1_000_000]
    if args.reps < 1:
        parser.error("--reps must be >= 1")
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
