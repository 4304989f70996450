"""A PostgreSQL cluster of a test's own, which it may stop, crash and restart.

The binaries are the `pgserver` wheel's (a runtime dependency, so present
wherever the suite runs); the cluster lives in a fresh temporary directory and
listens on a unix socket there only. Like pgserver, it runs as the `pgserver`
system user when the suite runs as root (PostgreSQL refuses to run as root).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

USER = "postgres"
PORT = 5432  # only names the socket file: nothing listens on TCP


def _bin(name: str) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR unset
        from pgserver._commands import POSTGRES_BIN_PATH

    return str(POSTGRES_BIN_PATH / name)


def _system_user() -> str | None:
    if os.geteuid() != 0:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pgserver.utils import ensure_user_exists

    ensure_user_exists("pgserver")
    return "pgserver"


@dataclass
class PostgresCluster:
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="kpg-")))
    system_user: str | None = field(default_factory=_system_user)

    @property
    def pgdata(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "postgres.log"

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://{USER}@/{database}?host={self.root}&port={PORT}"

    def _run(self, *args: str, timeout: float = 60) -> None:
        subprocess.run(
            args,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=timeout,
            user=self.system_user,
        )

    def init(self) -> PostgresCluster:
        if self.system_user:
            shutil.chown(self.root, self.system_user)
        self.root.chmod(0o755)
        self._run(
            _bin("initdb"),
            "-D",
            str(self.pgdata),
            "-U",
            USER,
            "--auth=trust",
            "--encoding=utf8",
            "--no-sync",
        )
        with (self.pgdata / "postgresql.conf").open("a") as conf:
            # Test settings: no TCP, quick shutdown, no durability waits.
            conf.write(
                f"listen_addresses = ''\nunix_socket_directories = '{self.root}'\n"
                f"port = {PORT}\nfsync = off\nmax_connections = 100\n"
            )
        return self

    def start(self, timeout: float = 60.0) -> None:
        """Start and wait until it accepts connections. pg_ctl's own waiting (-w)
        is not used: pgserver's pg_ctl was seen to crash (SIGSEGV) in it under load."""
        deadline = time.monotonic() + timeout
        while not self.running():
            try:
                self._run(_bin("pg_ctl"), "-D", str(self.pgdata), "-l", str(self.log), "start")
            except subprocess.CalledProcessError:
                if time.monotonic() > deadline:
                    raise
            launched = time.monotonic()
            while not self.running() and time.monotonic() - launched < 10:
                time.sleep(0.05)  # the postmaster writes its pid file
            if time.monotonic() > deadline:
                raise TimeoutError(f"PostgreSQL did not start: {self.log.read_text()[-2000:]}")
        while not self._ready():
            if time.monotonic() > deadline:
                raise TimeoutError(f"PostgreSQL did not start: {self.log.read_text()[-2000:]}")
            time.sleep(0.05)

    def _ready(self) -> bool:
        result = subprocess.run(
            [_bin("pg_isready"), "-q", "-h", str(self.root), "-p", str(PORT), "-U", USER],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        )
        return result.returncode == 0

    def stop(self, mode: str = "fast", timeout: float = 60.0) -> None:
        """`fast`: a clean shutdown (sessions are terminated); `immediate`: a crash
        (no checkpoint, recovery on the next start). The postmaster is signalled
        directly, as pg_ctl does (SIGINT, SIGQUIT), and waited for here."""
        pid = self.postmaster_pid()
        if pid is None:
            return
        os.kill(pid, {"fast": signal.SIGINT, "immediate": signal.SIGQUIT}[mode])
        deadline = time.monotonic() + timeout
        while self.running():
            if time.monotonic() > deadline:
                raise TimeoutError("PostgreSQL did not stop")
            time.sleep(0.02)

    def postmaster_pid(self) -> int | None:
        try:
            pid = int((self.pgdata / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None  # a stale pid file, left by a crash
        return pid

    def running(self) -> bool:
        return self.postmaster_pid() is not None

    async def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                con = await asyncpg.connect(self.dsn())
            except (OSError, asyncpg.PostgresError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)
                continue
            await con.close()
            return

    def destroy(self) -> None:
        if self.pgdata.exists() and self.running():
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)
