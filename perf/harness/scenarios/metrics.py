"""What metrics and tracing cost (was perf/metrics_cost_bench.py; perf/README.md).

Three more servers (one process each) on the run's database: off, metrics
(scraped every SCRAPE_SECONDS by this harness) and both (metrics plus tracing,
exported to an OTLP sink here that answers 200). Each is driven by a closed loop
of CONCURRENCY provenance reads or erasures of absent customers, in short bursts
that alternate between them for ROUNDS cycles, so a shared machine's drift hits
them alike. Goal: metrics cost < 5% of throughput.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
import psutil

from harness import stack
from harness.report import Row
from harness.run import Context
from kaireon.erasure.v1 import erasure_pb2, erasure_pb2_grpc
from kaireon.provenance.v1 import provenance_pb2, provenance_pb2_grpc
from kaireon_testkit.keys import free_port
from kaireon_testkit.server import metadata

CALLS = ("provenance", "erasure")
CONFIGS = ("off", "metrics", "both")
ROUNDS = 2
CONCURRENCY = 8
# Prometheus scrapes every 15-60 s in practice; 5 s keeps the exposition cost visible.
SCRAPE_SECONDS = 5.0
GOAL_PERCENT = 5.0


class _Sink(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def _scrape(port: int, stop: threading.Event) -> None:
    """Scrape at once, then every SCRAPE_SECONDS, until stopped."""
    url = f"http://127.0.0.1:{port}/metrics"
    while True:
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=5) as r:
            r.read()
        if stop.wait(SCRAPE_SECONDS):
            return


def _cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


async def _drive(ctx: Context, port: int, call: str, seconds: float) -> int:
    """Calls completed in `seconds` by CONCURRENCY loops, after one warm-up each."""
    meta = metadata(ctx.tenant)
    read = ctx.plan.read()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        provenance = provenance_pb2_grpc.ProvenanceServiceStub(channel)
        erasure = erasure_pb2_grpc.ErasureServiceStub(channel)

        async def one(i: int) -> None:
            if call == "provenance":
                n = read.first + i % read.count
                decision = f"{read.decision_prefix}{n:0{read.width}d}_1"
                request = provenance_pb2.GetDecisionProvenanceRequest(decision_id=decision)
                await provenance.GetDecisionProvenance(request, metadata=meta)
            else:
                absent = erasure_pb2.EraseCustomerRequest(customer_id=f"mcost_{port}_{i}")
                await erasure.EraseCustomer(absent, metadata=meta)

        for i in range(CONCURRENCY):
            await one(i)
        end = time.monotonic() + seconds

        async def loop(w: int) -> int:
            calls = 0
            while time.monotonic() < end:
                await one(w + (calls + 1) * CONCURRENCY)
                calls += 1
            return calls

        return sum(await asyncio.gather(*(loop(w) for w in range(CONCURRENCY))))


def _measure(ctx: Context, rows: dict[tuple[str, str], Row]) -> None:
    sink = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    started: dict[str, tuple[stack.Managed, int, int]] = {}
    seconds = ctx.profile.h2_seconds
    calls = {key: 0 for key in rows}
    cpu = {key: 0.0 for key in rows}
    try:
        for config in CONFIGS:
            port, metrics_port = free_port(), 0 if config == "off" else free_port()
            env = {"KAIREON_METRICS_PORT": str(metrics_port), "OTEL_TRACES_EXPORTER": "none"}
            if metrics_port:
                env["KAIREON_METRICS_HOST"] = "127.0.0.1"
            if config == "both":
                env.update(
                    OTEL_TRACES_EXPORTER="otlp",
                    OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
                    OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{sink.server_port}",
                )
            server = stack.start_server(
                dsn=ctx.db.dsn,
                grpc_port=port,
                http_port=None,
                workers=1,
                signing_key=ctx.dir / "signing-key.pem",
                workdir=ctx.dir,
                extra_env=env,
                name=f"metrics-{config}",
            )
            started[config] = (server, port, metrics_port)
            stack.wait_serving(server, port, 1)
        for _ in range(ROUNDS):
            for call in CALLS:
                for config, (server, port, metrics_port) in started.items():
                    stop = threading.Event()
                    if metrics_port:  # scraped while it is driven: part of its cost
                        threading.Thread(target=_scrape, args=(metrics_port, stop)).start()
                    before = _cpu_seconds(server.pid)
                    calls[(call, config)] += ctx.on_loop(_drive(ctx, port, call, seconds))
                    cpu[(call, config)] += _cpu_seconds(server.pid) - before
                    stop.set()
    finally:
        for server, _port, _metrics in started.values():
            server.stop()
        sink.shutdown()
    elapsed = ROUNDS * seconds
    for (call, config), row in rows.items():
        n = calls[(call, config)]
        row.rps, row.errors = n / elapsed, 0
        per_call = cpu[(call, config)] / max(1, n) * 1000
        off_rate = calls[(call, "off")] / elapsed
        off_cpu = cpu[(call, "off")] / max(1, calls[(call, "off")]) * 1000
        cost = (off_rate - row.rps) / off_rate * 100 if off_rate else 0.0
        row.extra.update(cpu_ms_per_call=per_call, throughput_cost_percent=cost)
        row.note = f"server CPU {per_call:.2f} ms/call"
        if config != "off":
            row.note += f"; vs off: throughput {-cost:+.1f}%, CPU {per_call / off_cpu - 1:+.1%}"
        if config == "metrics":
            met = "met" if cost < GOAL_PERCENT else "MISSED"
            if ctx.profile.level == "smoke":  # bursts of a second: noise, not a verdict
                met = "not judged at smoke scale"
            row.note += f"; goal metrics cost < {GOAL_PERCENT:g}% {met}"


async def run(ctx: Context) -> list[Row]:
    burst = ctx.profile.h2_seconds
    rows = {
        (call, config): Row(
            f"metrics.{call}.{config}",
            f"{call} with metrics/tracing {config} (one server process)",
            "python grpc.aio",
            offered=f"closed loop, {CONCURRENCY} in flight, {ROUNDS} x {burst:g}s",
            baseline=None if config == "off" else f"metrics.{call}.off",
        )
        for call in CALLS
        for config in CONFIGS
    }
    # One window for the three servers' alternating bursts; each row's CPU is its
    # own server's, measured around its bursts. A failure (a server that does not
    # start) is every row's.
    first = await ctx.measure(next(iter(rows.values())), "", lambda: _measure(ctx, rows))
    for row in rows.values():
        row.status = first.status
    return list(rows.values())
