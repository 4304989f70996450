"""Provenance benchmark: GetDecisionProvenance vs a trivial RPC (grpc.health.v1 Check).

    .venv/bin/python perf/provenance_bench.py [--seconds 10] [--concurrency 32] [--rounds 2]
    .venv/bin/python perf/provenance_bench.py --target HOST:PORT --tenant demo   # a running server

Without --target it starts `kaireon-server --demo` as a subprocess (embedded
PostgreSQL in a temporary directory unless DATABASE_URL is set, a throwaway
ECDSA P-256 COSIGN_KEY so every bundle is really signed, trusted headers), so
the load generator (this process, grpc.aio) and the server do not share a
GIL. Closed loop: --concurrency callers each issue the next call when the
previous one answers, for --seconds per phase; phases alternate trivial,
bundle, trivial, bundle ... (--rounds pairs), so drift hits both alike.
Bundles rotate over the seeded decisions (dec_00001_1 ...), every call is a
full emission: the as-of-decision reads, redaction, RFC 8785, sha256, an ECDSA
signature and the audit-row append.

Prints requests, errors, RPS, p50 and p99 per scenario, then the ratios
bundle/trivial. The k6 scenarios at 1K RPS (gRPC and REST) are perf/run's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from grpc_health.v1 import health_pb2, health_pb2_grpc

from kaireon.provenance.v1 import provenance_pb2, provenance_pb2_grpc

ROOT = Path(__file__).resolve().parents[1]
DEMO_CUSTOMERS = 50  # the --demo seed (SeedSize())
DECISIONS_PER_CUSTOMER = 3


@dataclass
class Result:
    name: str
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    seconds: float = 0.0

    def add(self, other: Result) -> None:
        self.latencies += other.latencies
        self.errors += other.errors
        self.seconds += other.seconds

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    def quantile(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def _phase(
    name: str, call: Callable[[int], Awaitable[Any]], *, seconds: float, concurrency: int
) -> Result:
    result = Result(name)
    deadline = time.perf_counter() + seconds
    counter = iter(range(1 << 62))

    async def worker() -> None:
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            try:
                await call(next(counter))
            except grpc.aio.AioRpcError:
                result.errors += 1
                continue
            result.latencies.append(time.perf_counter() - start)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    result.seconds = time.perf_counter() - started
    return result


def _decisions(customers: int) -> list[str]:
    return [
        f"dec_{n:05d}_{k}"
        for n in range(1, customers + 1)
        for k in range(1, DECISIONS_PER_CUSTOMER + 1)
    ]


async def bench(args: argparse.Namespace, target: str) -> dict[str, Result]:
    metadata = (("x-tenant-id", args.tenant), ("x-user-role", "admin"))
    decisions = _decisions(args.customers)
    async with grpc.aio.insecure_channel(target) as channel:
        await asyncio.wait_for(channel.channel_ready(), 30)
        health = health_pb2_grpc.HealthStub(channel)
        provenance = provenance_pb2_grpc.ProvenanceServiceStub(channel)
        # Fail fast (and warm up) before measuring.
        first = await provenance.GetDecisionProvenance(
            provenance_pb2.GetDecisionProvenanceRequest(decision_id=decisions[0]),
            metadata=metadata,
        )
        if first.signature == "unsigned":
            print("note: the server signs nothing (no COSIGN_KEY)", file=sys.stderr)

        async def trivial(_: int) -> Any:
            return await health.Check(health_pb2.HealthCheckRequest(), timeout=10)

        async def bundle(i: int) -> Any:
            request = provenance_pb2.GetDecisionProvenanceRequest(
                decision_id=decisions[i % len(decisions)]
            )
            return await provenance.GetDecisionProvenance(request, metadata=metadata, timeout=10)

        totals = {"trivial": Result("health.Check"), "bundle": Result("GetDecisionProvenance")}
        for _ in range(args.rounds):
            for key, call in (("trivial", trivial), ("bundle", bundle)):
                totals[key].add(
                    await _phase(key, call, seconds=args.seconds, concurrency=args.concurrency)
                )
    return totals


def _report(totals: dict[str, Result], args: argparse.Namespace) -> dict[str, Any]:
    trivial, bundle = totals["trivial"], totals["bundle"]
    rows = {
        r.name: {
            "requests": len(r.latencies),
            "errors": r.errors,
            "rps": round(r.rps, 1),
            "p50_ms": round(r.quantile(0.50), 3),
            "p99_ms": round(r.quantile(0.99), 3),
        }
        for r in (trivial, bundle)
    }
    ratios = {
        "rps": round(bundle.rps / trivial.rps, 3) if trivial.rps else None,
        "p50": round(bundle.quantile(0.5) / trivial.quantile(0.5), 2),
        "p99": round(bundle.quantile(0.99) / trivial.quantile(0.99), 2),
    }
    return {
        "concurrency": args.concurrency,
        "secondsPerPhase": args.seconds,
        "rounds": args.rounds,
        "scenarios": rows,
        "bundleOverTrivial": ratios,
    }


def _print(report: dict[str, Any]) -> None:
    print(
        f"closed loop, concurrency {report['concurrency']}, "
        f"{report['rounds']} x {report['secondsPerPhase']}s per scenario"
    )
    print(f"{'scenario':<24}{'requests':>10}{'errors':>8}{'rps':>10}{'p50 ms':>10}{'p99 ms':>10}")
    for name, row in report["scenarios"].items():
        print(
            f"{name:<24}{row['requests']:>10}{row['errors']:>8}{row['rps']:>10}"
            f"{row['p50_ms']:>10}{row['p99_ms']:>10}"
        )
    r = report["bundleOverTrivial"]
    print(f"bundle / trivial: rps x{r['rps']}, p50 x{r['p50']}, p99 x{r['p99']}")


def _start_server(workdir: Path) -> tuple[subprocess.Popen[str], str]:
    key = ec.generate_private_key(ec.SECP256R1())
    key_path = workdir / "bench-cosign.key"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    env = {
        **os.environ,
        "KAIREON_DATA_DIR": str(workdir / "data"),
        "KAIREON_TRUST_HEADERS": "true",
        "KAIREON_GRPC_HOST": "127.0.0.1",
        "KAIREON_GRPC_PORT": "0",
        "KAIREON_HTTP_PORT": "0",
        "KAIREON_LOG_LEVEL": "INFO",
        "COSIGN_KEY": str(key_path),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "kaireon_server", "--demo"],
        env=env,
        cwd=str(ROOT),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            if proc.poll() is not None:
                raise RuntimeError("server exited before serving")
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("msg") == "serving":
            # Keep reading stderr so the server never blocks on a full pipe.
            import threading

            threading.Thread(target=lambda: [None for _ in proc.stderr or ()], daemon=True).start()
            return proc, f"127.0.0.1:{entry['grpc_port']}"
    proc.kill()
    raise TimeoutError("server did not start within 180 s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--target", help="benchmark a running server instead of starting one")
    parser.add_argument("--tenant", default="demo", help="tenant holding the seeded decisions")
    parser.add_argument(
        "--customers", type=int, default=DEMO_CUSTOMERS, help="seeded customers to rotate over"
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each phase")
    parser.add_argument("--concurrency", type=int, default=32, help="callers in flight")
    parser.add_argument("--rounds", type=int, default=2, help="trivial/bundle phase pairs")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.seconds > 300 or args.rounds < 1 or args.concurrency < 1:
        parser.error("--seconds must be in (0, 300], --rounds and --concurrency >= 1")
    proc = None
    with tempfile.TemporaryDirectory(prefix="kaireon-bench-") as workdir:
        try:
            target = args.target
            if target is None:
                proc, target = _start_server(Path(workdir))
            totals = asyncio.run(bench(args, target))
        finally:
            if proc is not None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)
    report = _report(totals, args)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
