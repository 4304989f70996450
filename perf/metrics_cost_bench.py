"""What metrics and tracing cost: throughput of two calls with both off, metrics
on, and metrics + tracing on, measured in the same run.

Self-contained: starts one embedded PostgreSQL (or uses DATABASE_URL), seeds a
tenant, then for each configuration runs `python -m kaireon_server` as a
subprocess and drives it over gRPC with a closed loop of `--concurrency` calls:

- provenance: GetDecisionProvenance of seeded decisions (a read, signed bundle);
- erasure: EraseCustomer of seeded customers (after the first pass the rows are
  gone; the call still locks, checks holds, counts, writes its audit row and
  signs a receipt).

Configurations (one server process each, started afresh):

- off:     KAIREON_METRICS_PORT=0, no OTEL_* (no per-call hooks installed);
- metrics: KAIREON_METRICS_PORT set, scraped every 5 s by this script;
- both:    metrics as above plus tracing: OTLP/HTTP to a local sink in this
           script that answers 200 (every span is built, batched and exported).

The three servers run side by side and short bursts alternate between them
(off, metrics, both, off, ...) for `--rounds` cycles, so drift in the shared
machine's load hits all three alike; calls/s and the server process's CPU
time per call are summed per configuration. Acceptance: metrics cost < 5% of
throughput on both calls.

    .venv/bin/python perf/metrics_cost_bench.py --seconds 3 --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import psutil

from harness import servers
from kaireon.erasure.v1 import erasure_pb2, erasure_pb2_grpc
from kaireon.provenance.v1 import provenance_pb2, provenance_pb2_grpc
from kaireon_server.demo.seed import SeedSize, customer_id, decision_id, seed_tenant
from kaireon_server.platform.config import Settings
from kaireon_server.platform.db import connect_database
from kaireon_server.platform.db.embedded import EmbeddedPostgres
from kaireon_testkit.keys import free_port, write_signing_key

# A fresh tenant per run, so DATABASE_URL may point at a database used before.
TENANT = f"bench{int(time.time())}"
SEED = SeedSize(customers=200, interactions_per_customer=10, decisions_per_customer=2)
META = (("x-tenant-id", TENANT), ("x-user-role", "admin"))
# Prometheus scrapes every 15-60 s in practice; 5 s keeps the exposition cost visible.
SCRAPE_SECONDS = 5.0


class _Sink(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def scraper(port: int, stop: threading.Event) -> None:
    """Scrape at once, then every SCRAPE_SECONDS, until stopped."""
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                r.read()
        except OSError:
            pass
        if stop.wait(SCRAPE_SECONDS):
            return


def cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


async def drive(target: str, call: str, seconds: float, concurrency: int) -> tuple[int, float]:
    async with grpc.aio.insecure_channel(target) as channel:
        provenance = provenance_pb2_grpc.ProvenanceServiceStub(channel)
        erasure = erasure_pb2_grpc.ErasureServiceStub(channel)
        counter = {"n": 0}

        async def one(i: int) -> None:
            # Reads from the first half of the customers, erasures from the second
            # (an erased customer's decisions are gone).
            half = SEED.customers // 2
            n = 1 + i % half
            if call == "provenance":
                await provenance.GetDecisionProvenance(
                    provenance_pb2.GetDecisionProvenanceRequest(decision_id=decision_id(n, 1)),
                    metadata=META,
                )
            else:
                await erasure.EraseCustomer(
                    erasure_pb2.EraseCustomerRequest(customer_id=customer_id(half + n)),
                    metadata=META,
                )

        for i in range(concurrency):  # warm-up: connections, caches
            await one(i)
        end = time.monotonic() + seconds

        async def worker(w: int) -> None:
            i = w
            while time.monotonic() < end:
                await one(i)
                counter["n"] += 1
                i += concurrency

        began = time.monotonic()
        await asyncio.gather(*(worker(w) for w in range(concurrency)))
        return counter["n"], time.monotonic() - began


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kaireon-metrics-bench-") as tmp:
        work = Path(tmp)
        embedded = None if os.environ.get("DATABASE_URL") else EmbeddedPostgres(work / "pg")
        dsn = os.environ.get("DATABASE_URL") or await embedded.start()  # type: ignore[union-attr]
        try:
            await measure(args, work, dsn)
        finally:
            if embedded is not None:
                await embedded.stop()


async def measure(args: argparse.Namespace, work: Path, dsn: str) -> None:
    for name in list(os.environ):
        if name.startswith(("OTEL_", "KAIREON_")):
            os.environ.pop(name)
    db = await connect_database(Settings(database_url=dsn, trust_headers=True))
    try:
        await seed_tenant(db, TENANT, SEED)
    finally:
        await db.close()
    key = write_signing_key(work / "cosign.key")

    sink = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    configs: dict[str, dict[str, str]] = {
        "off": {},
        "metrics": {"KAIREON_METRICS_PORT": "auto"},
        "both": {
            "KAIREON_METRICS_PORT": "auto",
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink.server_port}",
        },
    }
    # All three servers run side by side; short bursts alternate between them
    # (off, metrics, both, off, ...) so the shared machine's load drifts over all
    # three alike. Throughput and the server's CPU time per call are summed per
    # configuration.
    started: dict[str, tuple[servers.Managed, int, int]] = {}
    try:
        for name, extra in configs.items():
            env, port, metrics_port = dict(extra), free_port(), 0
            if extra.get("KAIREON_METRICS_PORT") == "auto":
                metrics_port = free_port()
                env.update(KAIREON_METRICS_PORT=str(metrics_port), KAIREON_METRICS_HOST="127.0.0.1")
            server = servers.start_server(
                dsn=dsn,
                grpc_port=port,
                http_port=None,
                workers=1,
                signing_key=key,
                workdir=work,
                extra_env=env,
                name=name,
            )
            started[name] = (server, port, metrics_port)
            servers.wait_serving(server, port, 1)
        calls: dict[tuple[str, str], float] = {}
        elapsed: dict[tuple[str, str], float] = {}
        cpu: dict[tuple[str, str], float] = {}
        for cycle in range(args.rounds):
            for call in ("provenance", "erasure"):
                for name, (server, port, metrics_port) in started.items():
                    stop = threading.Event()
                    if metrics_port:  # scraped while it is driven: part of its cost
                        threading.Thread(
                            target=scraper, args=(metrics_port, stop), daemon=True
                        ).start()
                    before = cpu_seconds(server.pid)
                    n, seconds = await drive(
                        f"127.0.0.1:{port}", call, args.seconds, args.concurrency
                    )
                    used = cpu_seconds(server.pid) - before
                    stop.set()
                    key = (name, call)
                    calls[key] = calls.get(key, 0) + n
                    elapsed[key] = elapsed.get(key, 0.0) + seconds
                    cpu[key] = cpu.get(key, 0.0) + used
                    print(
                        f"cycle {cycle + 1} {name:8} {call:10} {n / seconds:8.1f} calls/s "
                        f"{used / n * 1000:6.2f} CPU ms/call",
                        flush=True,
                    )
    finally:
        for server, _port, _metrics in started.values():
            server.stop()
    sink.shutdown()

    print(
        "\n| call | config | calls/s | throughput cost | server CPU ms/call | CPU cost |"
        "\n|---|---|---:|---:|---:|---:|"
    )
    failed = False
    for call in ("provenance", "erasure"):
        rate_off = calls[("off", call)] / elapsed[("off", call)]
        cpu_off = cpu[("off", call)] / calls[("off", call)] * 1000
        for name in configs:
            key = (name, call)
            rate = calls[key] / elapsed[key]
            per_call = cpu[key] / calls[key] * 1000
            cost = (rate_off - rate) / rate_off * 100
            cpu_cost = (per_call - cpu_off) / cpu_off * 100
            if name == "metrics":
                failed |= cost >= 5.0
            row = f"| {call} | {name} | {rate:.1f} | {cost:+.1f}% | {per_call:.2f} |"
            print(f"{row} {cpu_cost:+.1f}% |")
    print("\nmetrics cost < 5% of throughput:", "FAIL" if failed else "PASS")


if __name__ == "__main__":
    asyncio.run(main())
