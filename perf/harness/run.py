"""perf/run's orchestrator: the context every scenario measures through, the
groups in order, and the one report.

A scenario is a module of harness/scenarios with `async def run(ctx) -> list[Row]`;
it builds its rows and hands the blocking work to `ctx.measure`, which runs it in a
thread inside a CPU/RSS window of the process groups (server, echo, PostgreSQL).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import resource
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from harness import h2load, k6, profile, report, seed, targets
from harness.procmon import Timeline
from harness.report import Row
from harness.stack import Harness, Managed, log, start_echo
from harness.stats import percentiles
from kaireon_testkit.keys import free_port

T = TypeVar("T")
LEVEL_RPS = {"smoke": 20, "1k": 1000, "2k": 2000, "5k": 5000, "10k": 10000}
LEVELS = ("2k", "5k", "10k")  # beyond 1k: longer runs, the same seed
# Share of the level each k6 row runs at: reads at the full rate, write paths (each a
# transaction that also appends to the tenant's audit chain) at a tenth or less; and
# the call time (ms) its VUs are sized for.
SHARES = {"echo": 1.0, "provenance": 1.0, "erasure": 0.1, "dsar": 0.05, "flow": 0.1}
CALL_MS = {"echo": 5, "provenance": 20, "erasure": 50, "dsar": 300, "flow": 50}


@dataclass(frozen=True)
class Profile(targets.Scale):
    """A level's sizes: those the targets depend on (targets.Scale), then the rest."""

    h2_warmup: float
    heavy_customers: int
    # The in-process flow runner (group "runner"): nodes per run, runs per row.
    runner_nodes: int
    runner_rounds: int
    # Requests in flight for the closed-loop (h2load) measurements.
    in_flight: int = 32


# level, k6 s, h2load s, customers, heavy rows, flow nodes; h2load warm-up s, heavy
# customers, runner nodes, runner rounds.
PROFILES = {
    "smoke": Profile("smoke", 1.5, 1.0, 200, 2_000, 5, 0.3, 2, 50, 1),
    "1k": Profile("1k", 15, 8, 10_000, 100_000, 50, 2, 4, 1000, 3),
    **{level: Profile(level, 20, 10, 10_000, 100_000, 50, 2, 4, 1000, 3) for level in LEVELS},
}


class Context(Harness):
    """One perf/run: owns the database, the processes, the rows' windows and notes."""

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args, "perf")
        p = PROFILES[args.level]
        p = replace(p, k6_seconds=args.duration) if args.duration else p
        p = replace(p, customers=args.customers) if args.customers else p
        self.profile = replace(p, heavy_rows=args.heavy_rows) if args.heavy_rows else p
        self.rate = LEVEL_RPS[self.profile.level]
        self.echo_port = free_port()
        # CPU and RSS of the process groups; each row reads the window it ran in.
        self.timeline = Timeline(0.2, full=False)
        self.echo: Managed | None = None
        self.h2load: str | None = None
        self.profiles: dict[str, str] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        erasure_rate = max(1, round(self.rate * SHARES["erasure"]))
        # Each protocol gets its own slice of never-erased customers, with headroom.
        self.erase_slice = math.ceil(erasure_rate * (self.profile.k6_seconds + 5) * 1.25) + 20
        self.plan = seed.SeedPlan(
            tenant=self.tenant,
            customers=self.profile.customers,
            erasure_pool=2 * self.erase_slice,
            heavy_customers=self.profile.heavy_customers,
            heavy_rows=self.profile.heavy_rows,
        )

    async def setup(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.h2load = h2load.available()
        if self.h2load is None:
            self.note(
                "h2load not found (Debian package nghttp2-client): the h2load rows, i.e. the "
                "framework and database ceilings, were not measured; install it "
                "(tools/dev/setup.sh as root, or apt-get install nghttp2-client) for them"
            )
        await self.serve(self.plan, self.timeline)
        self.echo = echo = await asyncio.to_thread(
            start_echo,
            port=self.echo_port,
            workers=self.workers,
            dsn=self.db.dsn,
            tenant=self.tenant,
            workdir=self.dir,
        )
        self.timeline.add_group("echo", lambda: [echo.pid])
        self.timeline.start()

    async def teardown(self) -> None:
        await self.timeline.stop()
        if self.echo is not None:
            await asyncio.to_thread(self.echo.stop)
        await self.stop()

    # -- measuring -----------------------------------------------------------------------

    def on_loop(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` on the run's event loop from a measuring thread."""
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    async def measure(
        self,
        row: Row,
        group: str,
        work: Callable[[], Any] | None,
        pg: str = "pg",
        also: tuple[str, ...] = (),
    ) -> Row:
        """Run `work` (blocking, in a thread) inside a CPU/RSS window of the process
        groups: `group`'s CPU and peak RSS are the row's server columns, `pg`'s its
        PostgreSQL CPU, and each of `also` adds `<name>_cpu` to its extra figures; a
        row that is not "ok" (not served, skipped) is returned as it is."""
        if work is None or row.status != "ok":
            return row
        log(f"{row.scenario} [{row.generator}] {row.offered}")
        # Every process alive now: its CPU so far is not the window's.
        opened = await self.timeline.sample()
        first = len(self.timeline.samples) - 1
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        try:
            result = await asyncio.to_thread(work)
        except Exception as exc:
            # A gRPC error's details say what went wrong; its repr is a page.
            details = getattr(exc, "details", None)
            text = (details() if callable(details) else None) or str(exc).strip()
            row.status = "failed: " + (text.splitlines()[-1][:160] if text else type(exc).__name__)
            log(f"  {row.status}")
            (self.dir / f"{row.key}.error.txt").write_text(str(exc))
            return row
        wall = (await self.timeline.sample()).t - opened.t
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        window = self.timeline.samples[first:]

        def cpu(group: str) -> float | None:
            """% of one core the group used after the opening sample (None: not sampled)."""
            if f"{group}.rss" not in window[-1].values or wall <= 0:
                return None
            return 100.0 * sum(s.values.get(f"{group}.cpu_s", 0.0) for s in window[1:]) / wall

        if (server_cpu := cpu(group)) is not None:
            row.server_cpu = server_cpu
            row.server_rss = int(max(s.values.get(f"{group}.rss", 0) for s in window))
        row.pg_cpu = cpu(pg)
        row.extra.update({f"{g}_cpu": c for g in also if (c := cpu(g)) is not None})
        if row.gen_cpu is None:
            used = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            row.gen_cpu = 100.0 * used / wall if wall > 0 else None
        return result if isinstance(result, Row) else row

    @contextlib.contextmanager
    def spying(self, out: Path, seconds: float, *, when: bool = True) -> Iterator[bool]:
        """With --profile (and `when`): py-spy records the server's processes into
        `out` while the block runs, for at most `seconds`; says whether it does."""
        spy = None
        if self.args.profile and when and self.server is not None:
            spy = profile.start(self.server.pid, seconds, out)
        try:
            yield spy is not None
        finally:
            if spy is not None:
                profile.stop(spy)

    def profiled(
        self, title: str, path: Path, parts: list[tuple[str, tuple[str, ...]]], head: str = ""
    ) -> None:
        """With --profile: what py-spy recorded into `path`, by part, for the report."""
        if (text := profile.report(path, parts, head)) is not None:
            self.profiles[title] = text
            log(text)

    def check_served(self, row: Row, service: str, *, rest: bool = False) -> Row:
        if not self.served.get(service):
            row.status = "not served"
        elif rest and not self.http_ok():
            row.status = "skipped: REST adapter not running"
        return row

    def h2(
        self,
        row: Row,
        url: str,
        headers: dict[str, str],
        *,
        body: bytes | None = None,
        http1: bool = False,
        connections: int | None = None,
    ) -> Callable[[], Row] | None:
        """h2load, closed loop: a warm-up run (connections, pools, caches) of its own so
        that every request of the measured run is one the server left a trace of.
        `connections`: that many, one request in flight on each (long streams),
        instead of the profile's requests in flight. Nothing for a row already
        not measured (not served)."""
        if not row.measured:
            return None
        if self.h2load is None:
            row.status = "skipped: no h2load"
            return None
        p = self.profile
        clients = connections or (p.in_flight if http1 else max(self.workers * 4, 8))
        in_flight = connections or p.in_flight
        options = {
            "clients": clients,
            "streams": max(1, in_flight // clients),
            "body": body,
            "headers": headers,
            "http1": http1,
            "workdir": self.dir,
        }

        def work() -> Row:
            warm = h2load.run(url, duration=p.h2_warmup, name=f"{row.key}.warmup", **options)
            row.extra["warmup_requests"] = warm.requests
            # A window in which no request finished measured nothing (a loaded
            # machine, a cold server): double it, at most three times.
            window = p.h2_seconds
            result = h2load.run(url, duration=window, name=row.key, **options)
            while result.requests == 0 and window < 8 * p.h2_seconds:
                window *= 2
                result = h2load.run(url, duration=window, name=row.key, **options)
            row.extra["window_s"] = window
            row.offered = f"closed loop, {in_flight} in flight" + (" (HTTP/1.1)" * http1)
            row.rps = result.rps
            row.p50, row.p95, row.p99 = result.latency.p50, result.latency.p95, result.latency.p99
            row.errors = result.failed
            row.error_rate = result.failed / result.requests if result.requests else None
            row.extra["requests"] = result.requests
            row.extra["command"] = " ".join(result.command)
            return row

        return work

    def h2_grpc(
        self,
        row: Row,
        port: int,
        method: str,
        message: bytes,
        headers: dict[str, str],
        connections: int | None = None,
    ) -> Callable[[], Row] | None:
        grpc_headers = {"content-type": "application/grpc", "te": "trailers", **headers}
        url = f"http://127.0.0.1:{port}/{method}"
        body = h2load.grpc_frame(message)
        return self.h2(row, url, grpc_headers, body=body, connections=connections)

    async def k6(
        self,
        row: Row,
        op: str,
        protocol: str,
        *,
        rate: int | None = None,
        target: str | None = None,
        group: str = "server",
        **erase: int,
    ) -> Row:
        """k6, open loop: `op` (k6/lib/ops.js) over `protocol` at `rate` calls per second
        (default: the op's share of the level) for the profile's k6 seconds; `target`:
        another gRPC server (the echo); `erase`: the erasure's slice of the pool."""
        p = self.profile
        rate = rate or max(1, round(self.rate * SHARES[op]))
        row.offered = f"{rate}/s x {p.k6_seconds:g}s"
        name = f"{op}_{protocol}"
        plan = [k6.Scenario.arrival(name, op, protocol, rate, p.k6_seconds, CALL_MS[op], **erase)]
        env = self.k6_env(self.plan.customers)
        if target is not None:
            env["GRPC_TARGET"] = target

        def work() -> Row:
            done = k6.run(plan, env, workdir=self.dir, name=row.key, timeout=p.k6_seconds + 120)
            result = k6.read(done.metrics, latency=plan[0].latency)
            row.rps = result.ok / done.seconds if done.seconds > 0 else 0.0
            row.p50, row.p95, row.p99 = result.p50, result.p95, result.p99
            row.errors, row.error_rate = result.error_count, result.error_rate
            row.extra["latency_metric"] = result.latency_metric
            row.extra["dropped"] = result.dropped
            row.extra["command"] = done.shown()
            return row

        return await self.measure(row, group, work)

    async def both_protocols(self, op: str, title: str) -> list[Row]:
        """A k6 scenario over gRPC (vs the echo ceiling) then REST (vs its gRPC row); an
        erasure erases a slice of the pool of its own per protocol."""
        rows = []
        for i, (proto, base) in enumerate((("grpc", "echo.k6"), ("rest", f"{op}.grpc.k6"))):
            label = "gRPC" if proto == "grpc" else "REST"
            row = Row(f"{op}.{proto}.k6", f"{title}, {label}", "k6", baseline=base)
            self.check_served(row, op, rest=proto == "rest")
            erase = {"eraseFirst": i * self.erase_slice + 1, "eraseCount": self.erase_slice}
            rows.append(await self.k6(row, op, proto, **(erase if op == "erasure" else {})))
        return rows


def fill_single(row: Row, seconds: list[float], rows: int, timings: list[Any]) -> Row:
    """One operation at a time: median (p50) and worst (p99 column) of the repetitions."""
    row.p50 = percentiles([s * 1000 for s in seconds]).p50
    row.p99 = max(s * 1000 for s in seconds) if seconds else None
    total = sum(seconds)
    if row.unit != "req/s":
        row.rps = rows / total if total > 0 else None
    row.errors = 0
    row.extra.update(
        seconds=seconds, rows=rows, details=[getattr(t, "detail", "") for t in timings]
    )
    return row


async def run(args: argparse.Namespace) -> int:
    from harness.scenarios import GROUPS, OPT_IN

    ctx = Context(args)
    started = time.monotonic()
    rows: list[Row] = []
    try:
        await ctx.setup()
        for name, scenario in GROUPS.items():
            if name in args.only if args.only else name not in OPT_IN:
                rows += await scenario(ctx)
    finally:
        await ctx.teardown()
    return print_report(ctx, rows, time.monotonic() - started)


def print_report(ctx: Context, rows: list[Row], elapsed: float) -> int:
    header = ctx.header(
        f"perf/run — level {ctx.profile.level} ({ctx.rate} RPS), {elapsed:.0f}s",
        ctx.plan,
        "",
        "load generators: k6 (open loop, constant-arrival-rate) and h2load (closed loop); "
        "both run on the same 2 cores as the server: k6 takes about as much CPU as the "
        "server it loads (generator CPU column), h2load a fraction of it",
    )
    judged = targets.targets(rows, ctx.profile)
    if (note := targets.scale_note(judged)) is not None:
        header.append(note)
    text = "\n".join(header) + "\n\n" + report.table(rows)
    row_notes = [f"- {r.scenario}: {r.note}" for r in rows if r.note and r.measured]
    if row_notes:
        text += "\n\nrow notes:\n" + "\n".join(row_notes)
    text += "\n\n" + targets.table(judged)
    if ctx.notes:
        text += "\n\nnotes:\n" + "\n".join(f"- {n}" for n in ctx.notes)
    if ctx.profiles:
        text += "\n\n" + "\n\n".join(ctx.profiles.values())
    ctx.write(
        text,
        {
            "rows": report.rows_json(rows),
            "level": ctx.profile.level,
            "seed": ctx.plan.describe(),
            "targets": [{**t.__dict__, "status": t.status} for t in judged],
            "profiles": ctx.profiles,
        },
    )
    status = targets.exit_status(rows, judged)
    if status == targets.EXIT_TARGET_MISSED:
        log(f"a target judged at full scale was missed: exit {status}")
    return status
