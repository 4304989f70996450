"""The same offered load against 1 and then 3 replicas behind nginx (issue #19; opt-in,
root and nginx: perf/README.md).

The multi-host lab (tests/support/netns.py): PostgreSQL, each replica (one
process) and nginx in network namespaces of their own; k6 (harness/lab_load.py's
mix) reaches only nginx. One replica, then three, then the first alone again
(drift); each phase erases its own slice of the erasure pool. With fewer cores
than replicas the 3:1 ratio measures the balancer's and the extra processes'
cost, not scaling.
"""

from __future__ import annotations

import asyncio
import functools
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from harness import lab_load, seed
from harness.report import Row
from harness.run import Context
from harness.stack import log
from kaireon_testkit import netns
from kaireon_testkit.keys import write_signing_key

# Replicas behind nginx per phase: 1, 3, then 1 again (the two extra stopped),
# so that drift over the run (a growing database, other work on a shared
# machine) shows as a difference between the two one-replica rows.
PHASES = (("1", 1), ("3", 3), ("1-again", 1))
# Two offered loads in each phase, (reads/s, erasures/s) per protocol by level:
# "light", which one replica serves, so the phases differ in latency only, and
# "heavy", more than one process serves on 2 shared cores, so throughput can
# differ too.
LOADS = {
    "smoke": {"light": (3, 1), "heavy": (5, 1)},
    "1k": {"light": (40, 4), "heavy": (150, 15)},
    "5k": {"light": (80, 8), "heavy": (300, 30)},
    "10k": {"light": (160, 16), "heavy": (600, 60)},
}
NOTE = (
    "1 vs 3 replicas on the same cores as PostgreSQL, nginx and k6: with fewer cores "
    "than replicas the ratio shows the balancer's and the extra processes' overhead, "
    "not scaling"
)
DRIFT_NOTE = "the first phase's set-up again, last: its ratio to the first row is the drift"


@dataclass
class Step:
    row: Row
    load: lab_load.MixLoad
    replicas: int


def _steps(level: str, seconds: float) -> list[Step]:
    steps = []
    offset = 0  # each step erases its own slice of the pool
    for phase, count in PHASES:
        for name, (read_rate, erase_rate) in LOADS[level].items():
            first = phase == PHASES[0][0]
            row = Row(
                f"scaleout.{name}.{phase}.k6",
                f"{name} reads + erasures via nginx, {count} replica{'s' * (count > 1)}"
                + (" (again)" if phase.endswith("again") else ""),
                "k6",
                baseline=None if first else f"scaleout.{name}.{PHASES[0][0]}.k6",
            )
            row.note = "" if first else DRIFT_NOTE if phase.endswith("again") else NOTE
            load = lab_load.MixLoad(read_rate, erase_rate, seconds, offset)
            offset += load.erasures
            steps.append(Step(row, load, count))
    return steps


async def run(ctx: Context) -> list[Row]:
    steps = _steps(ctx.profile.level, ctx.profile.k6_seconds)
    reason = netns.unavailable_reason()
    if reason is not None:
        for step in steps:
            step.row.status = f"skipped: {reason}"
    else:
        lab = await asyncio.to_thread(netns.Lab.create)
        try:
            await _measure_steps(ctx, lab, steps)
        finally:
            await asyncio.to_thread(lab.close)
    return [step.row for step in steps]


async def _measure_steps(ctx: Context, lab: netns.Lab, steps: list[Step]) -> None:
    pg = await asyncio.to_thread(lab.postgres)
    await pg.wait_ready()
    pool = sum(step.load.erasures for step in steps)
    plan = seed.SeedPlan(ctx.tenant, ctx.profile.customers, pool)
    log(f"scaleout: seeding the lab's PostgreSQL: {plan.describe()}")
    await lab_load.migrate_and_seed(pg.dsn(), plan)
    key = write_signing_key(ctx.dir / "lab-signing-key.pem")
    replicas = [
        lab.replica(pg.tcp_dsn("postgres"), KAIREON_WORKERS="1", COSIGN_KEY=str(key))
        for _ in range(max(count for _, count in PHASES))
    ]
    lb: netns.Nginx | None = None
    # Each row's server columns: the replicas running (a stopped one has exited),
    # nginx and the lab's PostgreSQL.
    ctx.timeline.add_group(
        "lab-replicas", lambda: [r.proc.pid for r in replicas if r.proc and r.proc.poll() is None]
    )
    ctx.timeline.add_group("nginx", lambda: [lb.proc.pid] if lb and lb.proc else [])
    ctx.timeline.add_group("lab-pg", lambda: [pid] if (pid := pg.postmaster_pid()) else [])
    running = 0
    for step in steps:
        count = step.replicas
        warm_up = count != running
        if warm_up:
            for replica in replicas[running:count]:  # one at a time: the first migrates
                await asyncio.to_thread(replica.start)
                await netns.wait_serving(replica)
            behind = replicas[:count]
            if lb is None:
                lb = await asyncio.to_thread(lab.nginx, behind)
            else:
                lb.reload(behind)
                await asyncio.sleep(2)  # nginx's new workers take over
            for replica in replicas[count:running]:  # out of nginx first, then stopped
                await asyncio.to_thread(replica.stop)
            running = count
        assert lb is not None
        mix = functools.partial(
            lab_load.run_mix,
            grpc_target=lb.grpc_target,
            base_url=lb.rest,
            tenant=ctx.tenant,
            customers=plan.customers,
            workdir=ctx.dir,
        )
        if warm_up:
            # A short unmeasured run of reads only before each phase: fresh replicas'
            # first calls (connections, caches) and k6's first connections through
            # nginx (server reflection per VU) would otherwise weigh on the first rows.
            seconds = max(1.0, min(10.0, ctx.profile.k6_seconds / 3))
            load = lab_load.MixLoad(step.load.read_rate, 0, seconds)
            log(f"scaleout: warm-up, {load.describe()}")
            await asyncio.to_thread(mix, load, name=f"{step.row.key}.warmup")
        step.row.offered = step.load.describe()
        phase = functools.partial(_phase, step, lb, mix)
        await ctx.measure(step.row, "lab-replicas", phase, pg="lab-pg", also=("nginx",))


def _phase(step: Step, lb: netns.Nginx, mix: Callable[..., lab_load.MixResult]) -> None:
    """The step's mix (blocking), its figures into its row."""
    row, upstreams_before = step.row, lb.upstreams_used()
    result = mix(step.load, name=row.key)
    row.rps, row.p50, row.p95, row.p99 = result.rps, result.p50, result.p95, result.p99
    row.errors, row.error_rate = result.error_count, result.error_rate
    row.extra.update(
        replicas=step.replicas,
        requests=result.requests,
        dropped=result.dropped,
        failed_outcomes=result.outcomes,
        by_op=result.by_op,
        # Calls per replica address in this phase, from nginx's access log.
        upstreams=dict(Counter(lb.upstreams_used()) - Counter(upstreams_before)),
        command=result.command,
    )
    log(f"  {result.describe()}")
