"""perf/soak: a bounded soak of the whole service, loopback only (perf/README.md, "Soak").

    perf/soak --duration 10m --rate 20     # the recorded soak (about 15 minutes)
    perf/soak --smoke                      # ~30 s of load, tiny seed (tests/perf runs it)

The stack of perf/run, ONE k6 run of the whole mix (steady, burst, recovery,
harness/soak_plan.py) while the timeline samples the processes and PostgreSQL's
connections, then the checks of what the load left behind (harness/verify.py).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import re
import sys
import time
from dataclasses import asdict

import asyncpg

from harness import k6, seed, soak_plan, soak_report, verify
from harness.procmon import Sample, Timeline
from harness.report import columns_table
from harness.stack import Harness, amount, common_args, count, log, share

SMOKE = {"duration": 20.0, "rate": 4.0, "burst": 5.0, "burst_rate": 40.0, "recovery": 5.0}


def seconds(text: str) -> float:
    """'10m', '90s', '1m30s', '600' -> seconds."""
    if not re.fullmatch(r"\d+(\.\d+)?|(\d+(\.\d+)?(ms|s|m|h))+", text):
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 10m, 90s, 600)")
    unit = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "": 1.0}
    return sum(float(n) * unit[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)?", text))


class Soak(Harness):
    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args, "soak", "soak-")
        self.pool_max = int(os.environ.get("KAIREON_DB_POOL_MAX", "10"))
        self.pool_min = int(os.environ.get("KAIREON_DB_POOL_MIN", "2"))
        self.plan = soak_plan.plan(
            args.rate,
            args.duration,
            burst_rate=args.burst_rate if args.burst_rate is not None else 10 * args.rate,
            burst_seconds=args.burst,
            recovery_seconds=args.recovery,
        )
        self.seed_plan = seed.SeedPlan(self.tenant, args.customers, self.plan.erasure_pool)
        self.timeline = Timeline(args.interval)
        self.monitor_con: asyncpg.Connection | None = None
        self.load_started = 0.0  # wall clock of the k6 test's start

    # -- sampling ------------------------------------------------------------------------

    async def pg_gauges(self) -> dict[str, float]:
        assert self.monitor_con is not None
        row = await self.monitor_con.fetchrow(
            """
            SELECT count(*) AS clients,
                   -- The harness's own pool ($1, idle during the load) is not the server's.
                   greatest(0, count(*) - $1) AS server_connections,
                   -- Pools connect as "kaireon"; dedicated connections (LISTEN, a
                   -- flow run's advisory lock) name themselves kaireon-<purpose>.
                   greatest(0, count(*) FILTER (WHERE application_name = 'kaireon') - $1)
                     AS pool_connections,
                   count(*) FILTER (WHERE application_name <> 'kaireon') AS dedicated_connections,
                   count(*) FILTER (WHERE state = 'active') AS active,
                   count(*) FILTER (WHERE wait_event_type = 'Lock') AS waiting_lock,
                   count(*) FILTER (WHERE state LIKE 'idle in transaction%') AS idle_in_tx
              FROM pg_stat_activity
             WHERE backend_type = 'client backend' AND datname = current_database()
               AND pid <> pg_backend_pid()
            """,
            self.db.pool.get_size(),
        )
        assert row is not None
        return {f"pg.{column}": value for column, value in row.items()}

    def progress(self, sample: Sample) -> None:
        # A line a minute (every sample in a short run) so a long run shows it is alive.
        every = max(1, round(60 / self.timeline.interval)) if self.plan.seconds >= 120 else 1
        if (len(self.timeline.samples) - 1) % every:
            return
        v = sample.values
        log(
            f"t={sample.t:.0f}s server RSS {v.get('server.rss', 0) / 2**20:.0f} MB, "
            f"fds {v.get('server.fds', 0):.0f}; PG connections {v.get('pg.clients', 0):.0f} "
            f"({v.get('pg.active', 0):.0f} active); k6 RSS {v.get('k6.rss', 0) / 2**20:.0f} MB"
        )

    def health_flips(self) -> list[float]:
        """When (seconds from the load's start) the server reported NOT_SERVING."""
        assert self.server is not None
        return [
            dt.datetime.fromisoformat(e["ts"]).timestamp() - self.load_started
            for e in self.server.log_entries()
            if e.get("msg") == "health changed" and e.get("serving") is False and "ts" in e
        ]

    # -- the run -------------------------------------------------------------------------

    async def load(self) -> k6.K6Run:
        total = self.plan.phases[-1].end
        log(f"k6: {self.plan.describe()} ({total:.0f}s of load)")
        self.timeline.start(self.progress)
        try:
            done = await asyncio.to_thread(
                k6.run,
                self.plan.scenarios,
                self.k6_env(self.seed_plan.customers),
                workdir=self.dir,
                name="soak",
                timeout=total + 300,
                started=lambda pid: self.timeline.add_group("k6", lambda: [pid]),
            )
        finally:
            await self.timeline.sample()
            await self.timeline.stop()
        # Phases count from the test's start, after k6 initialised its VUs: the
        # run's length, back from its end, puts the samples on the same clock.
        ran = done.seconds
        self.load_started = time.time() - (self.timeline.now() - self.timeline.samples[-1].t) - ran
        self.timeline.shift(max(0.0, self.timeline.samples[-1].t - ran))
        return done

    async def checks(self) -> list[verify.Check]:
        db = self.db
        log("verifying: DSAR and flow queues drained, erasures, audit chain")
        drain = self.args.drain_timeout
        out = [await verify.queue_terminal(db, self.tenant, q, drain) for q in verify.QUEUES]
        out.append(await verify.erasure_residue(db, self.tenant, self.seed_plan.erasable()))
        # Last: every write of the run (and of the drain) is in the chain by now.
        out.append(await verify.verify_chain(self.grpc_target, self.tenant))
        for check in out:
            log(f"  {check}")
        return out

    async def run(self) -> int:
        started = time.monotonic()
        try:
            await self.serve(self.seed_plan, self.timeline, ports=(self.grpc_port, self.http_port))
            self.monitor_con = await self.db.dedicated_connection("kaireon-soak-monitor")
            self.timeline.add_gauges(self.pg_gauges)
            done = await self.load()
            checks = await self.checks()
        finally:
            if self.monitor_con is not None:
                await self.monitor_con.close()
            await self.stop()
        return self.report(done, checks, time.monotonic() - started)

    # -- the report ----------------------------------------------------------------------

    def report(self, done: k6.K6Run, checks: list[verify.Check], elapsed: float) -> int:
        op_rows = soak_report.rows(done.metrics, self.plan)
        resources = soak_report.resources(self.timeline, self.plan, self.args.window)
        # Each worker's pool, plus the supervisor's (idle, at its minimum size).
        bound = self.workers * self.pool_max + (self.pool_min if self.workers > 1 else 0)
        flips = self.health_flips()
        failures = soak_report.failures(done.output, self.load_started)
        sat = soak_report.saturation(op_rows, self.timeline, self.plan, bound, flips)
        header = self.header(
            f"perf/soak — {self.plan.describe()}; {elapsed:.0f}s in all",
            self.seed_plan,
            f"pool {self.pool_max} connections per worker, ",
            "load generator: one k6 run, one constant-arrival-rate scenario per operation, "
            "protocol and phase (open loop), on the same cores as the server",
        )
        totals = soak_report.phase_totals(op_rows)
        steady_calls, steady_errors = totals["steady"]
        rate = steady_errors / steady_calls if steady_calls else 1.0
        text = "\n".join(header) + "\n\n" + columns_table(soak_report.OPS_COLUMNS, op_rows) + "\n\n"
        text += soak_report.phase_summary(totals)
        text += "\n\n" + soak_report.failures_table(failures, flips, self.plan)
        text += "\n\n### Resources\n\n" + soak_report.resources_table(resources)
        if sat is not None:
            burst = [r for r in op_rows if r.phase == "burst"]
            text += f"\n\n### Saturation (burst)\n\nverdict: {sat.verdict}\n\n"
            text += "\n".join(f"- {line}" for line in sat.lines)
            text += "\n\n" + columns_table(soak_report.BURST_COLUMNS, burst)
        text += "\n\n### After the load\n\n" + "\n".join(f"- {c}" for c in checks)
        if self.notes:
            text += "\n\nnotes:\n" + "\n".join(f"- {n}" for n in self.notes)
        self.write(
            text,
            {
                "pool_max": self.pool_max,
                "tenant": self.tenant,
                "seed": self.seed_plan.describe(),
                "plan": {
                    "describe": self.plan.describe(),
                    **{k: v for k, v in asdict(self.plan).items() if k != "scenarios"},
                },
                "operations": [
                    {**asdict(r), "error_count": r.error_count, "error_rate": r.error_rate}
                    for r in op_rows
                ],
                "steady_error_rate": rate,
                "resources": [asdict(r) for r in resources],
                "saturation": None if sat is None else asdict(sat),
                "checks": [asdict(c) for c in checks],
                "timeline": [asdict(s) for s in self.timeline.samples],
                "failures": [asdict(f) for f in failures],
                "health_not_serving_s": flips,
                "k6_command": done.shown(),
                "elapsed_s": elapsed,
            },
        )
        return 0 if all(c.ok for c in checks) and rate <= self.args.max_error_rate else 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="perf/soak",
        description="A bounded soak of the whole service, loopback only (perf/README.md).",
    )
    add = common_args(parser, "soak-<timestamp>")
    add("--duration", type=seconds, default=600.0, help="steady phase (10m)")
    add("--rate", type=amount, default=20.0, help="steady calls per second, all operations (20)")
    add("--burst", type=seconds, default=60.0, help="burst phase, 0 = none (60s)")
    add("--burst-rate", type=amount, help="calls per second in the burst (10 x --rate)")
    add("--recovery", type=seconds, default=60.0, help="recovery phase (60s)")
    add("--customers", type=count, default=2000, help="read customers (2000)")
    add("--interval", type=amount, default=5.0, help="sampling interval, s (5)")
    add("--window", type=amount, default=60.0, help="growth: first vs last window, s (60)")
    add("--drain-timeout", type=amount, default=180.0, help="wait for DSAR/flow queues, s (180)")
    add("--max-error-rate", type=share, default=0.01, help="steady errors that fail the run")
    add("--smoke", action="store_true", help="~30 s of load, tiny seed (tests)")
    args = parser.parse_args(argv)
    if args.duration <= 0:
        parser.error("argument --duration: the steady phase needs a duration above 0")
    if args.smoke:
        vars(args).update(SMOKE, burst_rate=args.burst_rate or SMOKE["burst_rate"])
        args.customers = min(args.customers, 200)
        args.interval = min(args.interval, 1.0)
        args.window = min(args.window, 5.0)
    return args


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(Soak(parse_args(argv)).run())


if __name__ == "__main__":
    sys.exit(main())
