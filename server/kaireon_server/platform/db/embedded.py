"""The embedded PostgreSQL (PyPI `pgserver`): a real server from a wheel, for machines without one.

Several processes may share one data directory: pgserver counts handles (the
pids in pgdata/.handle_pids.json) and stops the server when the last one is
released. A process killed with SIGKILL never releases its handle, so its pid
would stay in that list for good and no later server would ever be the last
handle: its PostgreSQL would outlive it. Before attaching, the handles of
processes that no longer exist are therefore released (`_release_dead_handles`);
a postmaster left running by the killed server is then reused and owned by the
new server, which stops it on shutdown.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import logging
import os
import subprocess
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

log = logging.getLogger(__name__)

DATABASE_NAME = "kaireon"
# Tries of pgserver's start before giving up (see get_server).
START_ATTEMPTS = 3


@dataclass
class EmbeddedPostgres:
    data_dir: Path
    _server: Any = None

    async def start(self) -> str:
        """Start (or attach to) the server; return a DSN for the `kaireon` database."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._server = await asyncio.to_thread(get_server, self.data_dir.resolve() / "pgdata")
        await asyncio.to_thread(_ensure_database, self._server)
        uri = str(self._server.get_uri(DATABASE_NAME))
        log.info("embedded postgresql ready", extra={"data_dir": str(self.data_dir)})
        return uri

    async def stop(self) -> None:
        if self._server is not None:
            server, self._server = self._server, None
            await asyncio.to_thread(server.cleanup)


def get_server(pgdata: Path) -> Any:
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); harmless.
        warnings.simplefilter("ignore")
        import pgserver  # imported lazily: only the embedded mode needs it
        from pgserver.postgres_server import PostgresServer

        released: list[int] = []
        # Already attached in this process: pgserver hands back that handle, and
        # our own pid in the list is then a live handle, not a stale one.
        if pgdata.resolve() not in PostgresServer._instances:
            # pgserver's own inter-process lock, which guards the handle list.
            with PostgresServer._lock:
                released = _release_dead_handles(pgdata)
        if released:
            log.warning(
                "embedded postgresql: released the handles of processes that exited "
                "without stopping it (killed?); this server now owns it",
                extra={"released_handles": len(released)},
            )
        for attempt in range(1, START_ATTEMPTS + 1):
            try:
                return pgserver.get_server(pgdata, cleanup_mode="stop")  # type: ignore[attr-defined]
            except (subprocess.SubprocessError, OSError) as exc:
                # pgserver's `pg_ctl -w start` fails now and then on a loaded
                # machine (it has crashed before writing its log). Its half-made
                # instance stays registered; drop it so the next try starts afresh.
                broken = PostgresServer._instances.pop(pgdata.resolve(), None)
                if broken is not None:
                    atexit.unregister(broken._cleanup)
                if attempt == START_ATTEMPTS:
                    raise
                log.warning(
                    "embedded postgresql did not start; trying again",
                    extra={"attempt": attempt, "error": type(exc).__name__},
                )
                time.sleep(attempt)
        raise AssertionError("unreachable")


def _release_dead_handles(pgdata: Path) -> list[int]:
    """Drop from pgserver's handle list every pid that is not a live Python process
    (exited, a zombie, or a pid since reused by another program), and our own pid
    (we hold no handle yet). Returns the pids dropped."""
    import psutil  # type: ignore[import-untyped]  # a dependency of pgserver

    path = pgdata / ".handle_pids.json"
    try:
        pids = json.loads(path.read_text())
    except FileNotFoundError:
        return []
    except (OSError, ValueError):
        # An unreadable list would keep PostgreSQL running forever: start afresh.
        path.unlink(missing_ok=True)
        log.warning("embedded postgresql: unreadable handle list discarded")
        return []
    if not isinstance(pids, list):
        path.unlink(missing_ok=True)
        return []
    live = [pid for pid in pids if isinstance(pid, int) and _is_live_handle(psutil, pid)]
    if live != pids:
        path.write_text(json.dumps(live))
    return [pid for pid in pids if pid not in live]


def _is_live_handle(psutil: Any, pid: int) -> bool:
    if pid == os.getpid() or pid <= 0:
        return False
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        # Handles are held by Python processes; a reused pid is another program.
        return Path(process.exe()).name.startswith("python")
    except psutil.AccessDenied:
        return True  # another user's live process: not ours to judge
    except (psutil.NoSuchProcess, psutil.ZombieProcess, OSError):
        return False


def _ensure_database(server: Any) -> None:
    # DATABASE_NAME is a constant identifier, not input.
    exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE_NAME}';")  # noqa: S608
    if "(1 row)" not in exists:
        server.psql(f"CREATE DATABASE {DATABASE_NAME};")


def socket_dir_of(dsn: str) -> str | None:
    """The unix-socket directory of a `postgresql://…?host=/dir` DSN, if any."""
    hosts = parse_qs(urlparse(dsn).query).get("host")
    return hosts[0] if hosts else None
