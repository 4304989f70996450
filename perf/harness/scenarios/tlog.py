"""The transparency log under append load (was perf/audit_tlog_bench.py).

WRITERS concurrent writers append audit rows to a tenant of their own through
the server's group commit (`AuditBatcher`, in this process, on the run's
database) while the server under test integrates them into the log, woken by
the append notifications as in production. The row gives appends per second
(committed rows over the run) and, for every row, the time from its commit to
the first checkpoint covering it: p50 / p95 / p99 (ms) and, in the note, the
maximum and the share checkpointed within 1 s.
"""

from __future__ import annotations

import asyncio
import time

from harness.report import Row
from harness.run import Context
from harness.stats import percentiles
from kaireon_server.platform.audit_chain import AuditBatcher, AuditRow
from kaireon_server.platform.db import Database

WRITERS = 64
DRAIN_SECONDS = 30.0  # at most this long for the last rows to be checkpointed
CHECKPOINTED = "SELECT coalesce(max(size), 0) FROM audit_tlog_checkpoint WHERE tenant_id = $1"


async def _appends(db: Database, tenant: str, seconds: float) -> tuple[dict[int, float], float]:
    """Commit time of each row appended (by seq), and the seconds the writers ran."""
    batcher = AuditBatcher(db)
    committed: dict[int, float] = {}
    stop = time.monotonic() + seconds

    async def writer(w: int) -> None:
        i = 0
        while time.monotonic() < stop:
            record = await batcher.append(
                tenant,
                AuditRow(
                    action="bench_append",
                    entity_type="customer",
                    entity_id=f"cust_{w}_{i}",
                    actor="bench",
                    changes={"i": i},
                    personal={"email": f"p{w}.{i}@example.com"},
                    entity_id_is_personal=True,
                    subject_id=f"cust_{w}_{i}",
                ),
            )
            committed[record.seq] = time.monotonic()
            i += 1

    started = time.monotonic()
    try:
        await asyncio.gather(*(writer(w) for w in range(WRITERS)))
    finally:
        await batcher.close()
    return committed, time.monotonic() - started


async def _measure(ctx: Context, row: Row, tenant: str) -> Row:
    # When each seq was first covered by a checkpoint (polled every 10 ms), from the
    # first append until every committed row is covered or DRAIN_SECONDS after the
    # writers stop.
    writers = asyncio.create_task(_appends(ctx.db, tenant, ctx.profile.h2_seconds))
    seen: dict[int, float] = {}
    size, expected, deadline = 0, None, 0.0
    while expected is None or (size < expected and time.monotonic() < deadline):
        if expected is None and writers.done():
            committed, seconds = writers.result()
            expected, deadline = max(committed, default=0), time.monotonic() + DRAIN_SECONDS
        async with ctx.db.transaction(tenant, readonly=True) as con:
            now_size = int(await con.fetchval(CHECKPOINTED, tenant))
        now = time.monotonic()
        seen.update((seq, now) for seq in range(size + 1, now_size + 1))
        size = max(size, now_size)
        await asyncio.sleep(0.01)
    lags = [max(0.0, seen[s] - t) * 1000 for s, t in committed.items() if s in seen]
    stats = percentiles(lags)
    row.rps, row.p50, row.p95, row.p99 = len(committed) / seconds, stats.p50, stats.p95, stats.p99
    row.errors = len(committed) - len(lags)  # rows never checkpointed
    within = sum(1 for lag in lags if lag <= 1000)
    row.note = (
        f"{len(committed):,} rows appended; commit to checkpoint max "
        f"{max(lags, default=0):.0f} ms, {100 * within / max(1, len(committed)):.1f}% within 1 s"
    )
    row.extra.update(rows=len(committed), checkpointed=len(lags), within_1s=within)
    return row


async def run(ctx: Context) -> list[Row]:
    row = Row(
        "tlog.appends",
        f"audit appends, log integrating ({WRITERS} writers, group commit)",
        "python (in-process)",
        offered=f"{WRITERS} writers x {ctx.profile.h2_seconds:g}s",
        unit="rows/s",
    )
    tenant = f"{ctx.tenant}_tlog_{int(time.time())}"
    return [await ctx.measure(row, "server", lambda: ctx.on_loop(_measure(ctx, row, tenant)))]
