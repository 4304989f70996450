"""The stack under test, shared by perf/run and perf/soak: a database (embedded
PostgreSQL or DATABASE_URL), the seed, and the server as production runs it
(KAIREON_WORKERS processes, signing key), with the standalone REST adapter in
front when the build cannot serve REST from every worker.
"""

from __future__ import annotations

import asyncio
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import psutil

from harness import seed, servers
from kaireon_server.platform.config import Settings
from kaireon_server.platform.db import Database, connect_database
from kaireon_testkit.keys import free_port, write_signing_key

PERF_DIR = Path(__file__).resolve().parent.parent
REPO = PERF_DIR.parent


def log(message: str) -> None:
    print(f"[perf {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


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


def environment_lines(load_before: tuple[float, float, float]) -> list[str]:
    """Machine, load and commit: the frame every figure of a run is read in."""
    name, dirty = commit()
    return [
        f"machine: {machine_name()}, {platform.platform()}, python {platform.python_version()}",
        "load average (1/5/15 min) at start "
        + "/".join(f"{x:.1f}" for x in load_before)
        + ", at end "
        + "/".join(f"{x:.1f}" for x in os.getloadavg())
        + f" (on {os.cpu_count()} cores; other work on the machine competes with the run)",
        f"commit: {name}"
        + (f" (+ uncommitted changes in {len(dirty)} server/client files)" if dirty else ""),
    ]


def postmaster_pid(data_dir: Path) -> int | None:
    pidfile = data_dir / "pgdata" / "postmaster.pid"
    try:
        return int(pidfile.read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None


class Stack:
    """Owns the database, the server and (when needed) the standalone gateway."""

    def __init__(
        self,
        workdir: Path,
        *,
        workers: int,
        database_url: str | None,
        server_env: dict[str, str] | None = None,
    ) -> None:
        self.dir = workdir
        self.workers = workers
        self.database_url = database_url
        self.server_env = dict(server_env or {})
        self.grpc_port = free_port()
        self.http_port = free_port()
        self.db: Database | None = None
        self.server: servers.Managed | None = None
        self.gateway: servers.Managed | None = None
        self.served: dict[str, bool] = {}
        self.notes: list[str] = []
        self.seed_report: seed.SeedReport | None = None

    @property
    def embedded(self) -> bool:
        return not self.database_url

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def note(self, message: str) -> None:
        self.notes.append(message)
        log(message)

    async def open_database(self) -> Database:
        env = {
            "KAIREON_DATA_DIR": str(self.dir / "data"),
            "KAIREON_TRUST_HEADERS": "true",
            "DATABASE_URL": self.database_url or "",
        }
        where = (
            "DATABASE_URL"
            if self.database_url
            else f"embedded PostgreSQL in {env['KAIREON_DATA_DIR']}"
        )
        log(f"database: {where}")
        self.db = await connect_database(Settings.from_env(env))
        return self.db

    async def seed(self, plan: seed.SeedPlan) -> seed.SeedReport:
        assert self.db is not None
        log(f"seeding {plan.describe()}")
        self.seed_report = await seed.seed(self.db, plan)
        log(
            f"seeded {self.seed_report.total_rows:,} rows in {self.seed_report.seconds:.1f}s "
            + ", ".join(f"{c} {n:,} rows" for c, n in self.seed_report.heavy_rows.items())
        )
        return self.seed_report

    def _start(self, http_port: int | None, name: str) -> servers.Managed:
        assert self.db is not None
        return servers.start_server(
            dsn=self.db.dsn,
            grpc_port=self.grpc_port,
            http_port=http_port,
            workers=self.workers,
            signing_key=self.dir / "signing-key.pem",
            workdir=self.dir,
            extra_env=self.server_env,
            name=name,
        )

    async def start_server(self) -> None:
        """The server with REST in every worker, else behind the standalone gateway."""
        write_signing_key(self.dir / "signing-key.pem")
        log(f"starting kaireon-server: KAIREON_WORKERS={self.workers}, gRPC :{self.grpc_port}")
        self.server = self._start(self.http_port, "server")
        embedded_rest = True
        try:
            await asyncio.to_thread(
                servers.wait_serving, self.server, self.grpc_port, self.workers, self.http_port
            )
        except servers.HttpPortConflict as exc:
            # The in-process REST adapter must bind with SO_REUSEPORT like gRPC does;
            # until it does, serve REST from the standalone kaireon-gateway instead.
            self.note(
                f"{exc}; the server was restarted with KAIREON_HTTP_PORT=off and REST "
                "measured through the standalone kaireon-gateway (a server bug, not a "
                "harness choice)"
            )
            await asyncio.to_thread(self.server.stop)
            embedded_rest = False
            self.server = self._start(None, "server-rest-off")
            await asyncio.to_thread(servers.wait_serving, self.server, self.grpc_port, self.workers)
        # The server embeds the REST adapter on KAIREON_HTTP_PORT; a build that does
        # not gets the standalone kaireon-gateway in front, as some deployments run it.
        if not embedded_rest or not await asyncio.to_thread(
            servers.wait_http, self.server, self.http_port, 2.0
        ):
            log("REST adapter not served by the server: starting kaireon-gateway beside it")
            self.gateway = servers.start_gateway(
                grpc_port=self.grpc_port, http_port=self.http_port, workdir=self.dir
            )
            if not await asyncio.to_thread(servers.wait_http, self.gateway, self.http_port, 30.0):
                self.note("REST adapter did not start: REST rows not measured")
                log(self.gateway.tail())
                self.gateway.stop()
                self.gateway = None
            else:
                self.notes.append(
                    "REST served by the standalone kaireon-gateway process "
                    "(counted in server CPU/RSS)"
                )
        self.served = servers.served_services(self.grpc_port)
        log("served: " + ", ".join(f"{k}={'yes' if v else 'no'}" for k, v in self.served.items()))

    def server_roots(self) -> list[int]:
        """The server's process tree roots: the supervisor (+ the standalone gateway)."""
        roots = [self.server.pid] if self.server else []
        return roots + ([self.gateway.pid] if self.gateway else [])

    def pg_roots(self) -> list[int]:
        """The embedded postmaster (its backends are its children); none for DATABASE_URL."""
        if not self.embedded:
            return []
        pid = postmaster_pid(self.dir / "data")
        return [pid] if pid else []

    def http_ok(self) -> bool:
        return servers.http_ready(self.http_port)

    async def stop(self) -> None:
        """Stops the gateway and the server (draining), then closes the database."""
        if self.server is not None:
            restarts = servers.worker_restarts(self.server)
            if restarts:
                # A worker that crashed and came back during a scenario skews its figures.
                self.notes.append(
                    f"server workers restarted {restarts} time(s) during the run "
                    f"(see {self.server.log}): figures measured meanwhile are suspect"
                )
        for proc in (self.gateway, self.server):
            if proc is not None:
                code = await asyncio.to_thread(proc.stop)
                if proc is self.server and code not in (0, None):
                    self.notes.append(f"server exited {code} at shutdown")
        if self.db is not None:
            await self.db.close()
            self.db = None
