"""Provenance benchmark: GetDecisionProvenance against a bare grpc.aio echo, same run.

    .venv/bin/python perf/provenance_bench.py [--seconds 10] [--rounds 2] [--workers 2]
        [--generator auto|h2load|python] [--concurrency 32] [--profile] [--json]
    .venv/bin/python perf/provenance_bench.py --target HOST:PORT --tenant demo   # a running server

Without --target it starts `kaireon-server --demo` (embedded PostgreSQL in a
temporary directory unless DATABASE_URL is set, KAIREON_WORKERS=--workers, a
throwaway ECDSA P-256 COSIGN_KEY so every bundle is really signed, trusted
headers) and the bare grpc.aio echo server of perf/harness (the framework
ceiling, as many processes). Closed loop, --concurrency calls in flight,
--seconds per phase, after --warmup seconds of unmeasured bundles and an
ANALYZE; phases alternate echo, health.Check (the server's cheapest RPC: the
framework plus Kaireon's interceptor) and the bundle, --rounds times, so
drift hits all alike.

Generators: h2load (Debian nghttp2-client; a fraction of the server's CPU per
call) when installed, else a grpc.aio loop in this process. h2load sends one
fixed body, so each bundle phase asks for another decision; the python loop
rotates over the seeded decisions on every call. Every bundle call is a full
emission: the as-of-decision read, redaction, RFC 8785, sha256, an ECDSA
signature and the group-committed audit row.

Prints per scenario: requests, errors, req/s, p50 (median of the phases'),
p99 (worst phase's), and the CPU each process group spent per request (the
server's process tree, the echo's, PostgreSQL's, the generator): on a shared
machine CPU per request is the robust figure, req/s follows whatever CPU the
machine had left. Then the ratios to the echo ceiling. --profile records the
server with py-spy during the bundle phases and splits its CPU per bundle by
what the samples were doing (an estimate: samples are wall-clock, so a
process waiting for a core counts where it waits).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from google.protobuf import wrappers_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from kaireon.provenance.v1 import provenance_pb2, provenance_pb2_grpc

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "perf"))
from harness import h2load, procmon  # noqa: E402 - importable once perf/ is on the path
from harness import profile as pyspy  # noqa: E402
from harness.stats import LatencyStats, percentiles  # noqa: E402

DEMO_CUSTOMERS = 50  # the --demo seed (SeedSize())
DECISIONS_PER_CUSTOMER = 3
SCENARIOS = {
    "echo": "/kaireon.perf.v1.Echo/Echo",
    "health": "/grpc.health.v1.Health/Check",
    "bundle": "/kaireon.provenance.v1.ProvenanceService/GetDecisionProvenance",
}
TITLES = {
    "echo": "echo (bare grpc.aio)",
    "health": "health.Check",
    "bundle": "GetDecisionProvenance",
}
GROUPS = ("server", "echo", "postgres", "generator")


@dataclass
class Result:
    requests: int = 0
    errors: int = 0
    seconds: float = 0.0
    phases: list[LatencyStats] = field(default_factory=list)
    cpu: Counter[str] = field(default_factory=Counter)  # group -> cpu seconds

    def add(self, other: Result) -> None:
        self.requests += other.requests
        self.errors += other.errors
        self.seconds += other.seconds
        self.phases += other.phases
        self.cpu.update(other.cpu)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def p50(self) -> float | None:
        values = [p.p50 for p in self.phases if p.p50 is not None]
        return statistics.median(values) if values else None

    @property
    def p99(self) -> float | None:
        values = [p.p99 for p in self.phases if p.p99 is not None]
        return max(values) if values else None

    def cpu_ms(self, group: str) -> float | None:
        if not self.requests or group not in self.cpu:
            return None
        return 1000 * self.cpu[group] / self.requests


def _decisions(customers: int) -> list[str]:
    return [
        f"dec_{n:05d}_{k}"
        for n in range(1, customers + 1)
        for k in range(1, DECISIONS_PER_CUSTOMER + 1)
    ]


# --- generators ----------------------------------------------------------------


async def _python_phase(
    call: Callable[[int], Awaitable[Any]], *, seconds: float, concurrency: int
) -> Result:
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds
    counter = iter(range(1 << 62))

    async def worker() -> None:
        nonlocal errors
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            try:
                await call(next(counter))
            except grpc.aio.AioRpcError:
                errors += 1
                continue
            latencies.append((time.perf_counter() - start) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return Result(
        requests=len(latencies),
        errors=errors,
        seconds=time.perf_counter() - started,
        phases=[percentiles(latencies)],
    )


def _h2load_phase(target: str, path: str, message: bytes, args: argparse.Namespace) -> Result:
    clients = max(1, min(8, args.concurrency))
    with tempfile.TemporaryDirectory(prefix="kaireon-h2load-") as tmp:
        run = h2load.run(
            f"http://{target}{path}",
            duration=args.seconds,
            warmup=0,
            clients=clients,
            streams=max(1, args.concurrency // clients),
            body=h2load.grpc_frame(message),
            headers={
                "content-type": "application/grpc",
                "te": "trailers",
                "x-tenant-id": args.tenant,
                "x-user-role": "admin",
            },
            workdir=Path(tmp),
            name="phase",
        )
    # gRPC reports errors in trailers under HTTP 200, which h2load cannot see:
    # one checked call of each kind runs before anything is measured.
    return Result(
        requests=run.succeeded, errors=run.failed, seconds=run.seconds, phases=[run.latency]
    )


# --- processes -----------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _drain(stream: Any) -> None:
    # Keep reading, so a child never blocks on a full pipe.
    threading.Thread(target=lambda: [None for _ in stream], daemon=True).start()


def _start_server(workdir: Path, workers: int) -> tuple[subprocess.Popen[str], str]:
    key = ec.generate_private_key(ec.SECP256R1())
    key_path = workdir / "bench-cosign.key"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    port = _free_port()
    env = {
        **os.environ,
        "KAIREON_DATA_DIR": str(workdir / "data"),
        "KAIREON_TRUST_HEADERS": "true",
        "KAIREON_GRPC_HOST": "127.0.0.1",
        # Workers share a fixed port (SO_REUSEPORT); 0 would give each its own.
        "KAIREON_GRPC_PORT": str(port),
        "KAIREON_HTTP_PORT": "off",
        "KAIREON_WORKERS": str(workers),
        "KAIREON_LOG_LEVEL": "WARNING",
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
    _drain(proc.stderr)
    return proc, f"127.0.0.1:{port}"


def _start_echo(workers: int) -> tuple[subprocess.Popen[str], str]:
    port = _free_port()
    cmd = [sys.executable, "-m", "harness.echo_server", "--port", str(port)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "perf"), *sys.path])}
    proc = subprocess.Popen(
        [*cmd, "--workers", str(workers)],
        env=env,
        cwd=str(ROOT),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    _drain(proc.stdout)
    return proc, f"127.0.0.1:{port}"


def _stop(proc: subprocess.Popen[str] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def _postmaster(data_dir: Path) -> list[int]:
    """The embedded PostgreSQL the server started (its backends are its children)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        pid = int((data_dir / "pgdata" / "postmaster.pid").read_text().split()[0])
        if pid > 0:
            return [pid]
    return []


def _analyzer(data_dir: Path) -> Callable[[], Awaitable[None]]:
    """ANALYZE on the embedded PostgreSQL (its socket lives in its data directory)."""

    async def analyze() -> None:
        import asyncpg

        con = await asyncpg.connect(f"postgresql://postgres@/kaireon?host={data_dir / 'pgdata'}")
        try:
            await con.execute("ANALYZE")
        finally:
            await con.close()

    return analyze


async def _ready(channel: grpc.aio.Channel, seconds: float = 180) -> None:
    await asyncio.wait_for(channel.channel_ready(), seconds)


async def _first_bundle(
    stub: provenance_pb2_grpc.ProvenanceServiceStub,
    decision: str,
    metadata: tuple[tuple[str, str], ...],
    seconds: float = 180,
) -> provenance_pb2.GetDecisionProvenanceResponse:
    deadline = time.monotonic() + seconds
    while True:
        try:
            reply: provenance_pb2.GetDecisionProvenanceResponse = await stub.GetDecisionProvenance(
                provenance_pb2.GetDecisionProvenanceRequest(decision_id=decision),
                metadata=metadata,
                timeout=30,
            )
            return reply
        except grpc.aio.AioRpcError as exc:
            retry = {grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAVAILABLE}
            if exc.code() not in retry or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


# --- the run -------------------------------------------------------------------


class Meter:
    """CPU seconds per process group over one phase, plus the generator's."""

    def __init__(self, groups: dict[str, Callable[[], list[int]]]) -> None:
        self.monitor = procmon.ProcessMonitor(interval=0.5)
        for name, roots in groups.items():
            self.monitor.add_group(name, roots)
        self.monitor.start()

    async def measure(self, phase: Awaitable[Result]) -> Result:
        window = self.monitor.open_window()
        before = [resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
        result = await phase
        usage = self.monitor.close_window(window)
        after = [resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
        for name, used in usage.items():
            result.cpu[name] = used.cpu_seconds
        # This process (the python loop) or its finished children (h2load).
        result.cpu["generator"] = sum(
            a.ru_utime + a.ru_stime - b.ru_utime - b.ru_stime
            for a, b in zip(after, before, strict=True)
        )
        return result

    def stop(self) -> None:
        self.monitor.stop()


def _messages(decision: str) -> dict[str, bytes]:
    return {
        "echo": wrappers_pb2.BytesValue(value=b"x" * 32).SerializeToString(),
        "health": health_pb2.HealthCheckRequest().SerializeToString(),
        "bundle": provenance_pb2.GetDecisionProvenanceRequest(
            decision_id=decision
        ).SerializeToString(),
    }


async def bench(
    args: argparse.Namespace,
    targets: dict[str, str],
    meter: Meter | None,
    spy: Callable[[], Any],
    analyze: Callable[[], Awaitable[None]] | None = None,
) -> dict[str, Result]:
    metadata = (("x-tenant-id", args.tenant), ("x-user-role", "admin"))
    decisions = _decisions(args.customers)
    channels = {k: grpc.aio.insecure_channel(v) for k, v in targets.items()}
    try:
        for ch in channels.values():
            await _ready(ch)
        server = channels["server"]
        health = health_pb2_grpc.HealthStub(server)
        provenance = provenance_pb2_grpc.ProvenanceServiceStub(server)
        echo = channels.get("echo")
        echo_call = (
            echo.unary_unary(
                SCENARIOS["echo"],
                request_serializer=wrappers_pb2.BytesValue.SerializeToString,
                response_deserializer=wrappers_pb2.BytesValue.FromString,
            )
            if echo is not None
            else None
        )
        # Fail fast (and warm up) before measuring: one checked call of each kind,
        # the first retried while a starting server is still seeding its demo data.
        first = await _first_bundle(provenance, decisions[0], metadata)
        if first.signature == "unsigned":
            print("note: the server signs nothing (no COSIGN_KEY)", file=sys.stderr)
        await health.Check(health_pb2.HealthCheckRequest(), timeout=10)
        if echo_call is not None:
            await echo_call(wrappers_pb2.BytesValue(value=b"x"), timeout=10)

        def python_call(kind: str) -> Callable[[int], Awaitable[Any]]:
            if kind == "echo":
                assert echo_call is not None
                return lambda _: echo_call(wrappers_pb2.BytesValue(value=b"x" * 32), timeout=10)
            if kind == "health":
                return lambda _: health.Check(health_pb2.HealthCheckRequest(), timeout=10)
            return lambda i: provenance.GetDecisionProvenance(
                provenance_pb2.GetDecisionProvenanceRequest(
                    decision_id=decisions[i % len(decisions)]
                ),
                metadata=metadata,
                timeout=10,
            )

        if args.warmup > 0:
            # Unmeasured emissions over every decision, then the statistics
            # autovacuum would gather within a minute: a fresh database's plans
            # were made for an audit log of six rows (see docs/PROVENANCE.md).
            await _python_phase(
                python_call("bundle"), seconds=args.warmup, concurrency=args.concurrency
            )
            if analyze is not None:
                await analyze()
        kinds = [k for k in SCENARIOS if k in ("health", "bundle") or echo_call is not None]
        totals = {k: Result() for k in kinds}
        for round_no in range(args.rounds):
            decision = decisions[(round_no * 37) % len(decisions)]
            for kind in kinds:
                if args.generator == "h2load":
                    target = targets["echo" if kind == "echo" else "server"]
                    phase: Awaitable[Result] = asyncio.to_thread(
                        _h2load_phase, target, SCENARIOS[kind], _messages(decision)[kind], args
                    )
                else:
                    phase = _python_phase(
                        python_call(kind), seconds=args.seconds, concurrency=args.concurrency
                    )
                if kind == "bundle" and round_no == args.rounds - 1:
                    spy()
                result = await (meter.measure(phase) if meter else phase)
                totals[kind].add(result)
    finally:
        for ch in channels.values():
            await ch.close()
    return totals


# --- profile breakdown ---------------------------------------------------------

# (category, any of these frame fragments), first match from the top of the list.
_CATEGORIES: list[tuple[str, tuple[str, ...]]] = [
    ("idle (waiting in epoll)", ("EpollSelector.select",)),
    ("audit row (group commit: hashing, insert, transaction)", ("AuditBatcher.", "insert_rows")),
    ("ECDSA signature", ("EcdsaSigner.sign",)),
    ("redaction", ("provenance/redaction.py",)),
    ("RFC 8785 + cache + assembly", ("encode_rows", "platform/jcs.py", "provenance/cache.py")),
    ("read: statement rows -> objects", ("read_bundle",)),
    ("read: transaction + round trips (asyncpg)", ("read_rows",)),
    ("gRPC servicer glue (metadata, response message)", ("GetDecisionProvenance",)),
    ("Kaireon interceptor (identity, roles)", ("platform/auth/",)),
]
_OTHER = "gRPC framework + event loop (C core, asyncio)"
_LINE = re.compile(r":\d+\)$")


def breakdown(path: Path) -> tuple[int, Counter[str]]:
    counts: Counter[str] = Counter()
    total = 0
    if not path.exists():
        return 0, counts
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_LINE.sub(")", f) for f in stack.split(";") if not f.startswith("process ")]
        if not frames:
            continue
        total += count
        leaf, joined = frames[-1], ";".join(frames)
        for category, needles in _CATEGORIES:
            where = leaf if category.startswith("idle") else joined
            if any(n in where for n in needles):
                counts[category] += count
                break
        else:
            counts[_OTHER] += count
    return total, counts


# --- report --------------------------------------------------------------------


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def _report(totals: dict[str, Result], args: argparse.Namespace) -> dict[str, Any]:
    rows = {}
    for kind, r in totals.items():
        rows[kind] = {
            "scenario": TITLES[kind],
            "requests": r.requests,
            "errors": r.errors,
            "rps": round(r.rps, 1),
            "p50_ms": _round(r.p50),
            "p99_ms": _round(r.p99),
            "cpu_ms_per_request": {g: _round(r.cpu_ms(g)) for g in GROUPS if g in r.cpu},
        }
    report: dict[str, Any] = {
        "generator": args.generator,
        "concurrency": args.concurrency,
        "workers": args.workers,
        "secondsPerPhase": args.seconds,
        "rounds": args.rounds,
        "scenarios": rows,
    }
    bundle, echo = totals["bundle"], totals.get("echo")
    if echo is not None and echo.rps:
        echo_cpu = echo.cpu_ms("echo")
        bundle_cpu = bundle.cpu_ms("server")
        report["bundleOverEcho"] = {
            "rps": round(bundle.rps / echo.rps, 4),
            "serverCpuPerRequest": _round(
                bundle_cpu / echo_cpu if bundle_cpu and echo_cpu else None, 2
            ),
        }
    return report


def _print(report: dict[str, Any], profile: dict[str, Any] | None) -> None:
    print(
        f"closed loop ({report['generator']}), {report['concurrency']} in flight, "
        f"{report['workers']} server process(es), "
        f"{report['rounds']} x {report['secondsPerPhase']}s per scenario"
    )
    head = f"{'scenario':<24}{'requests':>9}{'errors':>7}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}"
    print(head + "   CPU ms per request (server / echo / postgres / generator)")
    for row in report["scenarios"].values():
        cpu = row["cpu_ms_per_request"]
        cells = " / ".join("-" if cpu.get(g) is None else f"{cpu[g]:.3f}" for g in GROUPS)
        print(
            f"{row['scenario']:<24}{row['requests']:>9}{row['errors']:>7}{row['rps']:>9}"
            f"{row['p50_ms'] or '-':>9}{row['p99_ms'] or '-':>9}   {cells}"
        )
    ratio = report.get("bundleOverEcho")
    if ratio:
        print(
            f"bundle / echo: req/s x{ratio['rps']}, "
            f"server CPU per request x{ratio['serverCpuPerRequest']}"
        )
    if profile:
        print(f"server CPU per bundle by activity (py-spy, {profile['samples']} samples):")
        for name, ms in profile["msPerBundle"].items():
            print(f"  {ms:7.3f} ms  {name}")


def _profile_report(path: Path, bundle: Result) -> dict[str, Any] | None:
    total, counts = breakdown(path)
    busy = total - counts.get(_CATEGORIES[0][0], 0)
    cpu = bundle.cpu_ms("server")
    if not busy or cpu is None:
        return None
    # Busy samples share the measured server CPU per bundle in proportion.
    per = {
        name: round(cpu * n / busy, 3)
        for name, n in counts.most_common()
        if not name.startswith("idle")
    }
    return {"samples": total, "idleSamples": total - busy, "msPerBundle": per}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--target", help="benchmark a running server instead of starting one")
    parser.add_argument("--echo-target", help="with --target: a running bare echo server")
    parser.add_argument("--tenant", default="demo", help="tenant holding the seeded decisions")
    parser.add_argument(
        "--customers", type=int, default=DEMO_CUSTOMERS, help="seeded customers to rotate over"
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each phase")
    parser.add_argument("--concurrency", type=int, default=32, help="calls in flight")
    parser.add_argument("--rounds", type=int, default=2, help="echo/health/bundle phase rounds")
    parser.add_argument(
        "--warmup", type=float, default=5.0, help="unmeasured bundle seconds, then ANALYZE"
    )
    parser.add_argument("--workers", type=int, default=2, help="server and echo processes")
    parser.add_argument("--generator", choices=["auto", "h2load", "python"], default="auto")
    parser.add_argument("--profile", action="store_true", help="py-spy the bundle phases")
    parser.add_argument("--profile-out", type=Path, help="keep py-spy's raw stacks here")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.seconds > 300 or args.rounds < 1 or args.concurrency < 1:
        parser.error("--seconds must be in (0, 300], --rounds and --concurrency >= 1")
    args.profile = args.profile or args.profile_out is not None
    if args.generator == "auto":
        args.generator = "h2load" if h2load.available() else "python"
    server = echo = None
    spy_proc: subprocess.Popen[bytes] | None = None
    with tempfile.TemporaryDirectory(prefix="kaireon-bench-") as tmp:
        workdir = Path(tmp)
        spy_path = args.profile_out or workdir / "profile.txt"
        meter = None
        try:
            targets: dict[str, str] = {}
            if args.target:
                targets["server"] = args.target
                if args.echo_target:
                    targets["echo"] = args.echo_target
            else:
                server, targets["server"] = _start_server(workdir, args.workers)
                echo, targets["echo"] = _start_echo(args.workers)
                # The supervisor and its workers / the postmaster and its backends.
                server_pid, echo_pid = server.pid, echo.pid
                meter = Meter(
                    {
                        "server": lambda: [server_pid],
                        "echo": lambda: [echo_pid],
                        "postgres": lambda: _postmaster(workdir / "data"),
                    }
                )

            def spy() -> None:
                nonlocal spy_proc
                if args.profile and server is not None:
                    spy_proc = pyspy.start(server.pid, args.seconds, spy_path)

            analyze = None if args.target else _analyzer(workdir / "data")
            totals = asyncio.run(bench(args, targets, meter, spy, analyze))
            if spy_proc is not None:
                spy_proc.wait(timeout=args.seconds + 60)
            profile = _profile_report(spy_path, totals["bundle"]) if args.profile else None
        finally:
            if meter is not None:
                meter.stop()
            _stop(echo)
            _stop(server)
    report = _report(totals, args)
    if profile:
        report["profile"] = profile
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print(report, profile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
