"""Each RPC's latency at two tenant sizes (was perf/scale_bench.py; opt-in; perf/README.md).

For each size N a fresh tenant is seeded on the run's database (the demo seed,
then N rows per table by `generate_series` and N chained audit rows through the
server's writer), integrated into the log and verified in full (timed: these
grow with the log by design), then VACUUM ANALYZE. Each RPC is then called at
both sizes in turn and its median kept: the large row's "p50 x" is the growth.
--scale-contention adds other calls' latency during a full StreamVerifyLog.
"""

from __future__ import annotations

import asyncio
import secrets
import statistics
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import grpc

from harness.report import Row
from harness.run import Context
from harness.stack import log
from harness.stats import percentiles
from kaireon.audit.v1 import audit_pb2, audit_pb2_grpc
from kaireon.dsar.v1 import dsar_pb2, dsar_pb2_grpc
from kaireon.erasure.v1 import erasure_pb2, erasure_pb2_grpc
from kaireon.flow.v1 import flow_pb2, flow_pb2_grpc
from kaireon.provenance.v1 import provenance_pb2, provenance_pb2_grpc
from kaireon_server.audit.tlog import Integrator, TlogSettings
from kaireon_server.demo.seed import SeedSize, seed_tenant
from kaireon_server.platform.audit_chain import AuditRow, insert_rows
from kaireon_server.platform.canonical import format_timestamp
from kaireon_server.platform.db import Database
from kaireon_server.platform.paging import encode_token
from kaireon_testkit.server import metadata

WARMUP = 3
PAGE = 50  # every list asks for a full page at both sizes (1% of 10,000 rows = 100)
DECISION = "dec_00001_1"  # a demo-seed decision: its bundle cites catalogue rows
AUDIT_BATCH = 5000  # rows per seeding transaction
NEW_ROWS = 100  # rows appended before each incremental verification call
PROBE_SECONDS = 30.0  # idle probing before and after the loaded window (2 s at --smoke)
PROBED = ("ListAuditEvents", "provenance")  # the calls probed during a full verification
T0 = datetime(2026, 1, 1, tzinfo=UTC)

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
# The PAGE newest completed requests get a small stored export, so the polling
# call (`status=completed`) attaches PAGE exports inline as in production.
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

Call = Callable[[], Awaitable[Any]]
Rpc = Callable[..., Awaitable[Any]]


def _audit_row(i: int, rows: int) -> AuditRow:
    """Bulk audit row i: a fifth `gdpr_erasure` (personal entity id), one in a
    hundred export accesses, the rest provenance emissions; 100 per subject."""
    subject = f"bulk_{i % max(1, rows // 100)}"
    when = T0 + timedelta(seconds=i)
    personal = i % 5 == 0
    if personal:
        action, kind, entity = "gdpr_erasure", "customer", subject
    elif i % 100 == 1:
        action, kind, entity = "dsar_export_downloaded", "dsar_request", f"bulkdec_{i}"
    else:
        action, kind, entity = "decision_provenance_emit", "decision", f"bulkdec_{i}"
    return AuditRow(
        action, kind, entity, "seed", entity_id_is_personal=personal, subject_id=subject, now=when
    )


async def _append(db: Database, tenant: str, rows: list[AuditRow]) -> None:
    """Hash-chained rows through the server's own writer (`insert_rows`), triggers off."""
    async with db.owner_connection() as con, con.transaction():
        await con.execute("SET LOCAL session_replication_role = replica")
        await insert_rows(con, tenant, rows)


async def _seed(db: Database, tenant: str, rows: int) -> dict[str, Any]:
    """Seed one tenant; returns the positions the deep-page calls start from."""
    await seed_tenant(db, tenant, SeedSize(customers=3, interactions_per_customer=5))
    deep = rows * 9 // 10
    async with db.owner_connection() as con, con.transaction():
        # Owner connection: no triggers (DSAR events and notifications).
        await con.execute("SET LOCAL session_replication_role = replica")
        await con.execute("SELECT set_config('kaireon.tenant_id', $1, true)", tenant)
        for statement in _SEED:
            await con.execute(statement, tenant, rows)
        for statement in _SEED_EXPORTS:
            await con.execute(statement, tenant, PAGE)
        head = await con.fetchval("SELECT seq FROM audit_chain_head WHERE tenant_id = $1", tenant)
    for first in range(1, rows + 1, AUDIT_BATCH):
        last = min(first + AUDIT_BATCH, rows + 1)
        await _append(db, tenant, [_audit_row(i, rows) for i in range(first, last)])
    async with db.owner_connection() as con:
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


async def _integrate_all(db: Database, integrator: Integrator, tenant: str) -> None:
    """Integrate the tenant's rows into its log. The server's own integrator, woken
    by the seed's rows, may hold the tenant (then `integrate` here returns 0 at
    once and the server does the work): either way, wait until the log reaches
    the chain's head."""
    deadline = time.monotonic() + 120
    while True:
        await integrator.integrate(tenant)
        async with db.transaction(tenant, readonly=True) as con:
            behind = await con.fetchval(
                "SELECT coalesce((SELECT seq FROM audit_chain_head WHERE tenant_id = $1), 0)"
                " - coalesce((SELECT size FROM audit_tlog_state WHERE tenant_id = $1), 0)",
                tenant,
            )
        if behind <= 0:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"scale: the log of {tenant} is {behind} rows behind after 120 s")
        await asyncio.sleep(0.05)


async def _catch_up(
    db: Database, integrator: Integrator, channel: grpc.aio.Channel, tenant: str, at: dict[str, Any]
) -> dict[str, float]:
    """Integrate the seeded rows into the tenant's log, run both verifications to the
    head (the full runs, timed), then VACUUM ANALYZE; the incremental calls measured
    afterwards start from there."""
    audit = audit_pb2_grpc.AuditServiceStub(channel)
    timings = {"integrate": await _timed(partial(_integrate_all, db, integrator, tenant)) / 1000}

    async def verify_all(name: str, rpc: Rpc, request: Any) -> Any:
        """Calls a verification until it reaches the head (timed); its last reply."""
        started = time.perf_counter()
        while (reply := await rpc(request, metadata=metadata(tenant))).more:
            pass
        assert reply.valid, reply
        timings[name] = time.perf_counter() - started
        return reply

    await verify_all("VerifyChain", audit.VerifyChain, audit_pb2.VerifyChainRequest())
    reply_log = await verify_all("VerifyLog", audit.VerifyLog, audit_pb2.VerifyLogRequest())
    timings["rows"] = float(reply_log.tree_size)
    async with db.owner_connection() as con:
        # Autovacuum of the fresh rows would otherwise run during the measurements
        # (on 2 cores that alone doubles some latencies).
        await con.execute("VACUUM ANALYZE")
        # The server's own integrator may have checkpointed further meanwhile.
        at["half"] = await con.fetchval(
            "SELECT size FROM audit_tlog_checkpoint WHERE tenant_id = $1 AND size <= $3"
            " ORDER BY abs(size - $2) LIMIT 1",
            tenant,
            reply_log.tree_size // 2,
            reply_log.tree_size,
        )
        at["size"] = reply_log.tree_size
    return timings


def _calls(channel: grpc.aio.Channel, tenant: str, at: dict[str, Any]) -> dict[str, Call]:
    op, admin = metadata(tenant, "operator"), metadata(tenant)
    dsar = dsar_pb2_grpc.DsarServiceStub(channel)
    flow = flow_pb2_grpc.FlowRunnerServiceStub(channel)
    audit = audit_pb2_grpc.AuditServiceStub(channel)
    erasure = erasure_pb2_grpc.ErasureServiceStub(channel)
    provenance = provenance_pb2_grpc.ProvenanceServiceStub(channel)

    def call(rpc: Rpc, request: Any, md: Any = admin) -> Call:
        return partial(rpc, request, metadata=md)

    def listing(rpc: Rpc, request: Callable[..., Any], md: Any) -> Callable[..., Call]:
        """A list call's variants by their request fields, each asking for a full page."""
        return lambda **fields: call(rpc, request(page_size=PAGE, **fields), md)

    dsars = listing(dsar.ListDsarRequests, dsar_pb2.ListDsarRequestsRequest, op)
    runs = listing(flow.ListRuns, flow_pb2.ListRunsRequest, op)
    events = listing(audit.ListAuditEvents, audit_pb2.ListAuditEventsRequest, admin)
    create = dsar_pb2.CreateDsarRequestRequest(request_type="export", subject_id="cust_00001")
    proof = audit_pb2.GetConsistencyProofRequest(first_size=at["half"], second_size=at["size"])
    entries = audit_pb2.ListEntriesRequest(start=at["leaf"], end=at["leaf"] + PAGE)
    inclusion = audit_pb2.GetInclusionProofRequest(index=at["leaf"])
    dry_run = erasure_pb2.EraseCustomerRequest(customer_id="bulk_7", dry_run=True)
    bundle = provenance_pb2.GetDecisionProvenanceRequest(decision_id=DECISION)
    return {
        "DSAR create": call(dsar.CreateDsarRequest, create, op),
        "DSAR get": call(dsar.GetDsarRequest, dsar_pb2.GetDsarRequestRequest(id=at["dsar_id"]), op),
        "DSAR list status=completed": dsars(status="completed"),
        "DSAR list status=failed": dsars(status="failed"),
        "DSAR list deep page": dsars(status="completed", page_token=at["dsar_token"]),
        "DSAR list subject": dsars(subject_id="bulk_7"),
        "ListRuns": runs(),
        "ListRuns state=failed": runs(state=flow_pb2.RUN_STATE_FAILED),
        "ListRuns state=running": runs(state=flow_pb2.RUN_STATE_RUNNING),
        "ListRuns deep page": runs(page_token=at["run_token"]),
        "GetRun": call(flow.GetRun, flow_pb2.GetRunRequest(run_id=at["run_id"]), op),
        "ListAuditEvents action=": events(action="dsar_export_downloaded"),
        "ListAuditEvents deep page": events(page_token=at["audit_token"]),
        "GetCheckpoint": call(audit.GetCheckpoint, audit_pb2.GetCheckpointRequest()),
        "GetInclusionProof": call(audit.GetInclusionProof, inclusion),
        "GetConsistencyProof": call(audit.GetConsistencyProof, proof),
        "ListEntries (50)": call(audit.ListEntries, entries),
        f"VerifyChain (+{NEW_ROWS} rows)": call(audit.VerifyChain, audit_pb2.VerifyChainRequest()),
        f"VerifyLog (+{NEW_ROWS} rows)": call(audit.VerifyLog, audit_pb2.VerifyLogRequest()),
        "erasure dry run": call(erasure.EraseCustomer, dry_run),
        # The calls probed while a full verification runs (PROBED), rows of their own too.
        "ListAuditEvents": events(),
        "provenance": call(provenance.GetDecisionProvenance, bundle),
    }


def _new_rows(db: Database, integrator: Integrator, tenant: str) -> dict[str, Call]:
    """Untimed steps before each call of the incremental verifications: NEW_ROWS
    fresh audit rows (and, for VerifyLog, their integration)."""

    async def append(integrate: bool) -> None:
        await _append(db, tenant, [_audit_row(i, 100) for i in range(1, NEW_ROWS + 1)])
        if integrate:
            await _integrate_all(db, integrator, tenant)

    return {
        f"VerifyChain (+{NEW_ROWS} rows)": partial(append, False),
        f"VerifyLog (+{NEW_ROWS} rows)": partial(append, True),
    }


async def _timed(call: Call) -> float:
    started = time.perf_counter()
    await call()
    return (time.perf_counter() - started) * 1000


async def _medians(
    calls: list[Call], before: list[Call | None], reps: int
) -> list[float] | grpc.StatusCode:
    """Median milliseconds of each call (one per size), or the failing status code.
    The sizes take turns, in alternating order, so drift of a shared machine
    favours neither. `before` runs untimed ahead of each call."""
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
        return error.code()
    return [statistics.median(t) for t in times]


async def _probe(calls: dict[str, Call], until: Awaitable[Any]) -> dict[str, list[float]]:
    """The probe calls in turn until `until` is done; their latencies."""
    work = asyncio.ensure_future(until)
    times: dict[str, list[float]] = {name: [] for name in calls}
    while not work.done():
        for name, call in calls.items():
            times[name].append(await _timed(call))
    await work
    return times


async def _stream_verify(channel: grpc.aio.Channel, tenant: str) -> tuple[float, int]:
    """One full StreamVerifyLog of the tenant: seconds and rows checked."""
    audit = audit_pb2_grpc.AuditServiceStub(channel)
    started = time.perf_counter()
    last = None
    request = audit_pb2.StreamVerifyLogRequest()
    async for message in audit.StreamVerifyLog(request, metadata=metadata(tenant)):
        last = message
    assert last is not None and last.result.valid, last
    return time.perf_counter() - started, last.result.rows_checked


async def _contention(
    channel: grpc.aio.Channel, tenant: str, all_calls: dict[str, Call], seconds: float
) -> list[Row]:
    """The PROBED calls idle, during a full StreamVerifyLog of `tenant`, and idle
    again; the loaded and the second idle rows' ratios are to the first idle row."""
    calls = {name: all_calls[name] for name in PROBED}
    idle = await _probe(calls, asyncio.sleep(seconds))
    verification = asyncio.ensure_future(_stream_verify(channel, tenant))
    loaded = await _probe(calls, verification)
    took, rows = verification.result()
    after = await _probe(calls, asyncio.sleep(seconds))
    verified = f"{rows:,} rows verified in {took:.1f} s ({rows / took:,.0f}/s)"
    out = []
    for name in calls:
        for phase, times in (("idle", idle), ("verifying", loaded), ("idle after", after)):
            stats = percentiles(times[name])
            row = Row(
                f"scale.contention.{_slug(name)}.{phase.replace(' ', '-')}",
                f"{name} while {'a full StreamVerifyLog runs' if phase == 'verifying' else phase}",
                "python grpc.aio",
                offered=f"{len(times[name])} calls",
                p50=stats.p50,
                p95=stats.p95,
                p99=stats.p99,
                errors=0,
                baseline=None if phase == "idle" else f"scale.contention.{_slug(name)}.idle",
                note=verified if phase == "verifying" else "",
            )
            out.append(row)
    return out


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")


async def run(ctx: Context) -> list[Row]:
    smoke = ctx.profile.level == "smoke"
    small, large = ctx.args.scale_sizes or ((1_000, 10_000) if smoke else (10_000, 100_000))
    reps = 3 if smoke else 25
    db = ctx.db
    integrator = Integrator(db, TlogSettings())
    rows: list[Row] = []
    async with grpc.aio.insecure_channel(ctx.grpc_target) as channel:
        calls: list[dict[str, Call]] = []
        befores: list[dict[str, Call]] = []
        tenants: list[str] = []
        for size in (small, large):
            tenant = f"{ctx.tenant}_scale{secrets.token_hex(3)}"
            started = time.perf_counter()
            at = await _seed(db, tenant, size)
            log(f"scale: seeded {size:,} rows per table in {time.perf_counter() - started:.1f} s")
            full = await _catch_up(db, integrator, channel, tenant, at)
            rows += [
                Row(
                    f"scale.full.{what}.{size}",
                    f"{what} in full, {size:,}-row tenant (proportional to the log)",
                    "python grpc.aio",
                    offered=f"{full['rows']:,.0f} log entries",
                    rps=full["rows"] / full[what],
                    unit="rows/s",
                    errors=0,
                )
                for what in ("integrate", "VerifyChain", "VerifyLog")
            ]
            calls.append(_calls(channel, tenant, at))
            befores.append(_new_rows(db, integrator, tenant))
            tenants.append(tenant)
        log(f"scale: {len(calls[0])} calls x {reps} per size")
        for name in calls[0]:
            medians = await _medians([c[name] for c in calls], [b.get(name) for b in befores], reps)
            for size, i in ((small, 0), (large, 1)):
                row = Row(
                    f"scale.{_slug(name)}.{size}",
                    f"{name}, {size:,} rows per table",
                    "python grpc.aio",
                    offered=f"{reps} calls, median",
                    baseline=None if i == 0 else f"scale.{_slug(name)}.{small}",
                )
                if isinstance(medians, grpc.StatusCode):
                    row.status = f"failed: {medians.name}"
                else:
                    row.p50, row.errors = medians[i], 0
                rows.append(row)
        # Each poll of status=completed shows PAGE exports: one access row per export
        # shown (ListDsarRequests), not one per export per poll.
        async with db.owner_connection() as con:
            access = [
                await con.fetchval(
                    "SELECT count(*) FROM audit_log WHERE tenant_id = $1"
                    " AND action = 'dsar_export_downloaded' AND actor = 'operator@headers'",
                    tenant,
                )
                for tenant in tenants
            ]
        for row in rows:
            if row.key.startswith("scale.dsar-list-status-completed."):
                row.note = f"access rows written by {WARMUP + reps} polls, per size: {access}"
        if ctx.args.scale_contention:
            seconds = 2.0 if smoke else PROBE_SECONDS
            rows += await _contention(channel, tenants[-1], calls[-1], seconds)
    return rows
