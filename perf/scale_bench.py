"""Scale benchmark: how each read RPC's latency grows with the tenant's history.

    .venv/bin/python perf/scale_bench.py                 # 10,000 and 100,000 rows
    .venv/bin/python perf/scale_bench.py --large         # 100,000 and 1,000,000 rows
    .venv/bin/python perf/scale_bench.py --sizes 5000,50000 --reps 15

One self-contained file (perf/ is being restructured; this script depends on
nothing else in it). Starts the real server in-process (gRPC on a free port,
DATABASE_URL or an embedded PostgreSQL in a temporary directory, DSAR workers
off so queued requests stay queued), then for each size N seeds a fresh tenant:
the demo seed (3 customers, their decisions and audit rows), then with
`generate_series`, as the owner and without triggers, N DSAR requests (1%
failed; the newest 50 completed ones with a small stored export, attached
inline by the polling call), N flow runs (1% failed), N audit rows (a fifth `gdpr_erasure`
records, one in a hundred export accesses), N interaction rows and N decision
traces over N/100 other customers; then VACUUM ANALYZE. Each RPC is called
--reps times per size after 3 warm-up calls, the two sizes taking turns, and
the median is kept. The last column is the growth factor large/small: about 1
for an O(log n) call, about 10 for O(n).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from kaireon.audit.v1 import audit_pb2, audit_pb2_grpc
from kaireon.dsar.v1 import dsar_pb2, dsar_pb2_grpc
from kaireon.erasure.v1 import erasure_pb2, erasure_pb2_grpc
from kaireon.flow.v1 import flow_pb2, flow_pb2_grpc
from kaireon.provenance.v1 import provenance_pb2, provenance_pb2_grpc
from kaireon_server.app import App
from kaireon_server.demo.seed import SeedSize, seed_tenant
from kaireon_server.platform.canonical import format_timestamp
from kaireon_server.platform.config import Settings
from kaireon_server.platform.paging import encode_token

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

# Audit rows after the demo seed's chain; the head moves past them so appends
# continue (the bulk rows are not hash-chained: VerifyChain is not measured).
_SEED_AUDIT = """
    INSERT INTO audit_log (tenant_id, seq, id, action, entity_type, entity_id, actor, changes,
                           prev_hash, integrity_hash, created_at, subject_id)
    SELECT $1, $3 + i, gen_random_uuid(),
           CASE WHEN i % 5 = 0 THEN 'gdpr_erasure'
                WHEN i % 100 = 1 THEN 'dsar_export_downloaded'
                ELSE 'decision_provenance_emit' END,
           CASE WHEN i % 5 = 0 THEN 'customer'
                WHEN i % 100 = 1 THEN 'dsar_request'
                ELSE 'decision' END,
           CASE WHEN i % 5 = 0 THEN NULL ELSE 'bulkdec_' || i END,
           'seed', '{}'::jsonb, 'seed', 'seed',
           timestamptz '2026-01-01' + i * interval '1 second',
           'bulk_' || (i % ($2 / 100))
      FROM generate_series(1, $2) i
"""


def _env(workdir: Path) -> dict[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    key_path = workdir / "bench-signing.key"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    env = {
        "KAIREON_TRUST_HEADERS": "true",
        "KAIREON_GRPC_HOST": "127.0.0.1",
        "KAIREON_GRPC_PORT": "0",
        "KAIREON_HTTP_PORT": "0",
        "KAIREON_DATA_DIR": str(workdir / "data"),
        "KAIREON_LOG_LEVEL": "WARNING",
        "KAIREON_DSAR_WORKERS": "0",
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
    async with app.db.owner_connection() as con:
        async with con.transaction():
            # Owner connection: no triggers (DSAR events and notifications).
            await con.execute("SET LOCAL session_replication_role = replica")
            await con.execute("SELECT set_config('kaireon.tenant_id', $1, true)", tenant)
            for statement in _SEED:
                await con.execute(statement, tenant, rows)
            for statement in _SEED_EXPORTS:
                await con.execute(statement, tenant, PAGE)
            head = await con.fetchval(
                "SELECT seq FROM audit_chain_head WHERE tenant_id = $1 FOR UPDATE", tenant
            )
            await con.execute(_SEED_AUDIT, tenant, rows, head)
            await con.execute(
                "UPDATE audit_chain_head SET seq = $2, head_hash = 'seed' WHERE tenant_id = $1",
                tenant,
                head + rows,
            )
        # VACUUM too: autovacuum of the fresh rows would otherwise run during the
        # measurements (on 2 cores that alone doubles some latencies).
        await con.execute(
            "VACUUM ANALYZE dsar_request, flow_run, audit_log, interaction_history, decision_trace"
        )
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
    }


Call = Callable[[], Awaitable[Any]]


def _calls(channel: grpc.aio.Channel, tenant: str, at: dict[str, Any]) -> dict[str, Call]:
    operator = (("x-tenant-id", tenant), ("x-user-role", "operator"))
    admin = (("x-tenant-id", tenant), ("x-user-role", "admin"))
    dsar = dsar_pb2_grpc.DsarServiceStub(channel)
    flow = flow_pb2_grpc.FlowRunnerServiceStub(channel)
    audit = audit_pb2_grpc.AuditServiceStub(channel)
    erasure = erasure_pb2_grpc.ErasureServiceStub(channel)
    provenance = provenance_pb2_grpc.ProvenanceServiceStub(channel)
    return {
        "DSAR create": lambda: dsar.CreateDsarRequest(
            dsar_pb2.CreateDsarRequestRequest(request_type="export", subject_id="cust_00001"),
            metadata=operator,
        ),
        "DSAR get": lambda: dsar.GetDsarRequest(
            dsar_pb2.GetDsarRequestRequest(id=at["dsar_id"]), metadata=operator
        ),
        "DSAR list status=completed": lambda: dsar.ListDsarRequests(
            dsar_pb2.ListDsarRequestsRequest(status="completed", page_size=PAGE), metadata=operator
        ),
        "DSAR list status=failed": lambda: dsar.ListDsarRequests(
            dsar_pb2.ListDsarRequestsRequest(status="failed", page_size=PAGE), metadata=operator
        ),
        "DSAR list deep page": lambda: dsar.ListDsarRequests(
            dsar_pb2.ListDsarRequestsRequest(
                status="completed", page_size=PAGE, page_token=at["dsar_token"]
            ),
            metadata=operator,
        ),
        "DSAR list subject": lambda: dsar.ListDsarRequests(
            dsar_pb2.ListDsarRequestsRequest(subject_id="bulk_7", page_size=PAGE), metadata=operator
        ),
        "ListRuns": lambda: flow.ListRuns(
            flow_pb2.ListRunsRequest(page_size=PAGE), metadata=operator
        ),
        "ListRuns state=failed": lambda: flow.ListRuns(
            flow_pb2.ListRunsRequest(page_size=PAGE, state=flow_pb2.RUN_STATE_FAILED),
            metadata=operator,
        ),
        "ListRuns state=running": lambda: flow.ListRuns(
            flow_pb2.ListRunsRequest(page_size=PAGE, state=flow_pb2.RUN_STATE_RUNNING),
            metadata=operator,
        ),
        "ListRuns deep page": lambda: flow.ListRuns(
            flow_pb2.ListRunsRequest(page_size=PAGE, page_token=at["run_token"]), metadata=operator
        ),
        "GetRun": lambda: flow.GetRun(
            flow_pb2.GetRunRequest(run_id=at["run_id"]), metadata=operator
        ),
        "ListAuditEvents": lambda: audit.ListAuditEvents(
            audit_pb2.ListAuditEventsRequest(page_size=PAGE), metadata=admin
        ),
        "ListAuditEvents action=": lambda: audit.ListAuditEvents(
            audit_pb2.ListAuditEventsRequest(page_size=PAGE, action="dsar_export_downloaded"),
            metadata=admin,
        ),
        "ListAuditEvents deep page": lambda: audit.ListAuditEvents(
            audit_pb2.ListAuditEventsRequest(page_size=PAGE, page_token=at["audit_token"]),
            metadata=admin,
        ),
        "erasure dry run": lambda: erasure.EraseCustomer(
            erasure_pb2.EraseCustomerRequest(customer_id="bulk_7", dry_run=True), metadata=admin
        ),
        "provenance": lambda: provenance.GetDecisionProvenance(
            provenance_pb2.GetDecisionProvenanceRequest(decision_id=DECISION), metadata=admin
        ),
    }


async def _timed(call: Call) -> float:
    started = time.perf_counter()
    await call()
    return (time.perf_counter() - started) * 1000


async def _measure(calls: list[Call], reps: int) -> list[float | str]:
    """Median milliseconds of each call (one per size), or the failing status
    code's name. The sizes take turns, in alternating order, so drift of a
    shared machine favours neither."""
    times: list[list[float]] = [[] for _ in calls]
    try:
        for _ in range(WARMUP):
            for call in calls:
                await call()
        for n in range(reps):
            order = list(enumerate(calls))
            for i, call in order if n % 2 == 0 else reversed(order):
                times[i].append(await _timed(call))
    except grpc.aio.AioRpcError as error:
        return [error.code().name for _ in calls]
    return [statistics.median(t) for t in times]


async def run(args: argparse.Namespace) -> int:
    sizes: list[int] = args.sizes
    results: dict[int, dict[str, float | str]] = {}
    with tempfile.TemporaryDirectory(prefix="kaireon-scale-bench-") as tmp:
        app = App(Settings.from_env(_env(Path(tmp))))
        await app.start()
        try:
            assert app.db is not None
            async with app.db.owner_connection() as con:
                version = await con.fetchval("SHOW server_version")
            async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
                tenants: list[dict[str, Call]] = []
                names: list[str] = []
                for size in sizes:
                    tenant = f"scale{secrets.token_hex(4)}"
                    names.append(tenant)
                    started = time.perf_counter()
                    at = await _seed(app, tenant, size)
                    seeded = time.perf_counter() - started
                    print(f"seeded {size:,} rows per table in {seeded:.1f} s", file=sys.stderr)
                    tenants.append(_calls(channel, tenant, at))
                for name in tenants[0]:
                    medians = await _measure([t[name] for t in tenants], args.reps)
                    for size, median in zip(sizes, medians, strict=True):
                        results.setdefault(size, {})[name] = median
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
    return 1 if args.max_growth and worst > args.max_growth else 0


def _sizes(text: str) -> list[int]:
    sizes = [int(part) for part in text.split(",")]
    if len(sizes) != 2 or min(sizes) < 1000 or sizes[0] >= sizes[1]:
        raise argparse.ArgumentTypeError("two increasing sizes, each at least 1000")
    return sizes


def main() -> int:
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
    args = parser.parse_args()
    if args.large:
        args.sizes = [100_000, 1_000_000]
    if args.reps < 1:
        parser.error("--reps must be >= 1")
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
