"""Flow: StartRun under load (k6, gRPC then REST), then one run at a time, watched:
a chain of N no-op nodes beside a chain of 1, and the runner's overhead per node.

The overhead is the difference of the runs' node spans (first node's start → last
node's end, from the run record) divided by N-1: StartRun (validation, the run's
insert and commit), the watcher's stream and NOTIFY latency are left out of it; the
rows' p50/p99 are start → RUN_FINISHED as the watcher saw it, which includes them.
"""

from __future__ import annotations

import statistics
import time

from harness import probes
from harness.report import Row
from harness.run import Context, fill_single

RUNS = 5
# With --profile: how long py-spy watches the long chain, and the server's parts.
PROFILE_SECONDS = 10.0
PARTS: list[tuple[str, tuple[str, ...]]] = [
    ("WatchRun: read the event log, protobuf, stream", ("WatchRun", "watch_run")),
    ("StartRun: convert, validate, store the run, audit", ("StartRun", "start_run")),
    ("runner: checkpoint statement", ("_PostgresWriter.commit",)),
    ("recorder: event log + node status flushes", ("RunRecorder",)),
    ("runner: scheduling, cache keys, hooks, nodes", ("_Execution.", "FlowRunner.run")),
    ("run end: finalize, unlock", ("Executors._execute", "Executors._finalize")),
    (
        "watchdog, NOTIFY listener, sweep",
        ("_watchdog", "FlowNotifier", "db/listener.py", "_sweep_forever"),
    ),
]


async def _chain(ctx: Context, nodes: int, spans: dict[int, list[float]]) -> Row:
    row = Row(
        f"single.flow.{nodes}",
        f"flow run, chain of {nodes} no-op node(s), start → finished",
        "python grpc.aio",
        offered=f"{RUNS} runs",
    )
    out = ctx.dir / "profile-flow.txt"

    def work() -> Row:
        timings: list[probes.FlowTimed] = []
        # Profiled: the long chain again and again for ~10 s (enough samples).
        with ctx.spying(out, PROFILE_SECONDS * 3, when=nodes > 1) as spying:
            until = time.monotonic() + PROFILE_SECONDS if spying else 0.0
            while len(timings) < RUNS or time.monotonic() < until:
                run = probes.flow_run(ctx.grpc_target, ctx.tenant, nodes, 120)
                timings.append(ctx.on_loop(run))
        row.offered = f"{len(timings)} runs"
        spans[nodes] = [t.nodes_seconds for t in timings]
        row.extra["run_seconds"] = [t.run_seconds for t in timings]
        return fill_single(row, [t.seconds for t in timings], nodes * len(timings), timings)

    return await ctx.measure(ctx.check_served(row, "flow"), "server", work)


async def run(ctx: Context) -> list[Row]:
    rows = await ctx.both_protocols("flow", "flow start (2 no-op nodes)")
    n = ctx.profile.flow_nodes
    spans: dict[int, list[float]] = {}
    one, many = [await _chain(ctx, nodes, spans) for nodes in (1, n)]
    ctx.profiled(f"flow chain of {n} (watched)", ctx.dir / "profile-flow.txt", PARTS)
    overhead = Row("single.flow.overhead", "flow runner overhead per no-op node", "derived")
    overhead.offered = f"(chain {n} - chain 1) / {n - 1} of the runs' node spans"
    if one.measured and many.measured and 1 in spans and n in spans:
        per_node = (statistics.median(spans[n]) - statistics.median(spans[1])) * 1000
        overhead.p50 = per_node / max(1, n - 1)
        if one.p50 is not None and many.p50 is not None:
            # What a watching client saw per node (includes StartRun and the stream).
            watched = (many.p50 - one.p50) / max(1, n - 1)
            overhead.extra["watched_ms_per_node"] = watched
            overhead.offered += f" (start → RUN_FINISHED as watched: {watched:.2f} ms)"
    else:
        overhead.status = one.status if not one.measured else many.status
    return [*rows, one, many, overhead]
