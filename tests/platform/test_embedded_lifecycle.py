"""The embedded PostgreSQL stops with its server, also after a kill -9 left state behind
(issue #14 finding 9): a stale handle in pgserver's list, a running orphan postmaster,
a stale postmaster.pid."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import psutil
import pytest

from kaireon.audit.v1 import audit_pb2, audit_pb2_grpc
from tests.support.server import ServerProcess, metadata

pytestmark = pytest.mark.slow


def _postgres_on(pgdata: Path) -> list[psutil.Process]:
    """Every live postgres process serving this data directory."""
    found = []
    for proc in psutil.process_iter(attrs=["name", "cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if proc.info["name"] == "postgres" and str(pgdata) in cmdline:
            try:
                if proc.status() != psutil.STATUS_ZOMBIE:
                    found.append(proc)
            except psutil.NoSuchProcess:
                pass
    return found


def _alive(pid: int) -> bool:
    """Running (a zombie is not: its reaper may be an init that never reaps)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _postmaster_pid(pgdata: Path) -> int:
    return int((pgdata / "postmaster.pid").read_text().splitlines()[0])


def _wait_until_gone(pgdata: Path, timeout: float = 30.0) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    while (left := _postgres_on(pgdata)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


async def _serves(server: ServerProcess) -> None:
    async with grpc.aio.insecure_channel(server.target) as channel:
        reply = await audit_pb2_grpc.AuditServiceStub(channel).VerifyChain(
            audit_pb2.VerifyChainRequest(), metadata=metadata("demo"), timeout=30
        )
    assert reply.valid and reply.rows_checked > 0


def _kill9(server: ServerProcess) -> None:
    assert server.proc is not None
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait(timeout=30)


async def test_sigterm_stops_postgres_after_an_earlier_kill9() -> None:
    # Not tmp_path: concurrent pytest sessions prune each other's old basetemp dirs.
    with tempfile.TemporaryDirectory(prefix="kaireon-embedded-") as tmp:
        await _kill9_sequence(Path(tmp) / "data")


async def _kill9_sequence(data: Path) -> None:
    pgdata = data / "pgdata"
    env = {
        "KAIREON_DATA_DIR": str(data),
        "KAIREON_GRPC_PORT": "0",
        "KAIREON_HTTP_PORT": "0",
        "KAIREON_GRPC_HOST": "127.0.0.1",
        "KAIREON_TRUST_HEADERS": "true",
        "DATABASE_URL": "",
    }
    servers: list[ServerProcess] = []

    def start() -> ServerProcess:
        servers.append(ServerProcess(env, ["--demo"]).start(timeout=180))
        return servers[-1]

    try:
        # 1. A server, killed with SIGKILL: its PostgreSQL is orphaned, its handle stale.
        first = start()
        await _serves(first)
        orphan = _postmaster_pid(pgdata)
        _kill9(first)
        assert _alive(orphan)
        assert first.proc is not None and first.proc.pid in json.loads(
            (pgdata / ".handle_pids.json").read_text()
        )

        # 2. The next server reuses the orphan, owns it, and stops it on SIGTERM.
        second = start()
        await _serves(second)
        assert _postmaster_pid(pgdata) == orphan
        assert second.stop() == 0
        assert _wait_until_gone(pgdata) == []
        assert not _alive(orphan)
        assert any('"released_handles"' in line for line in second.log_lines)

        # 3. Both killed: a stale postmaster.pid and a stale handle, nothing running.
        third = start()
        postmaster = psutil.Process(_postmaster_pid(pgdata))
        _kill9(third)
        postmaster.kill()
        postmaster.wait(timeout=30)
        assert _wait_until_gone(pgdata) == []
        assert (pgdata / "postmaster.pid").exists()

        # 4. The next server starts PostgreSQL afresh and stops it on SIGTERM.
        fourth = start()
        await _serves(fourth)
        assert fourth.stop() == 0
        assert _wait_until_gone(pgdata) == []
        assert json.loads((pgdata / ".handle_pids.json").read_text()) == []
    finally:
        for server in servers:
            server.stop()
        # Never leave a postgres behind, whatever failed above.
        for proc in _postgres_on(pgdata):
            proc.kill()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_supervisor_stopped_during_start_up_stops_its_postgres() -> None:
    """KAIREON_WORKERS > 1: SIGTERM once the embedded PostgreSQL runs, before any
    worker serves. The supervisor's handlers are already installed, so it stops
    PostgreSQL and exits 0 (before the fix the default action killed it, orphaning
    PostgreSQL)."""
    with tempfile.TemporaryDirectory(prefix="kaireon-embedded-") as tmp:
        pgdata = Path(tmp) / "data" / "pgdata"
        env = {
            **os.environ,
            "KAIREON_DATA_DIR": str(Path(tmp) / "data"),
            "KAIREON_WORKERS": "2",
            "KAIREON_GRPC_PORT": str(_free_port()),
            "KAIREON_HTTP_PORT": "0",
            "KAIREON_GRPC_HOST": "127.0.0.1",
            "KAIREON_TRUST_HEADERS": "true",
            "DATABASE_URL": "",
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "kaireon_server", "--demo"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stderr is not None
            for line in proc.stderr:
                if "embedded postgresql ready" in line:
                    break
            assert _postgres_on(pgdata)
            proc.send_signal(signal.SIGTERM)
            proc.stderr.read()
            assert proc.wait(timeout=120) == 0
            assert _wait_until_gone(pgdata) == []
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
            for leftover in _postgres_on(pgdata):
                leftover.kill()


def test_only_dead_or_foreign_handles_are_released(tmp_path: Path) -> None:
    """The handle list keeps live Python processes; it drops exited pids, pids now
    held by another program, and this process's own pid (it holds no handle yet)."""
    from kaireon_server.platform.db.embedded import _release_dead_handles

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    python = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    other = subprocess.Popen(["sleep", "60"])
    try:
        handles = tmp_path / ".handle_pids.json"
        pids = [dead.pid, python.pid, other.pid, os.getpid()]
        handles.write_text(json.dumps(pids))
        released = _release_dead_handles(tmp_path)
        assert sorted(released) == sorted([dead.pid, other.pid, os.getpid()])
        assert json.loads(handles.read_text()) == [python.pid]
        # Nothing left to release: the list is unchanged.
        assert _release_dead_handles(tmp_path) == []
        # An unreadable list is discarded rather than keeping PostgreSQL up forever.
        handles.write_text("{not json")
        assert _release_dead_handles(tmp_path) == []
        assert not handles.exists()
    finally:
        for proc in (python, other):
            proc.kill()
            proc.wait()
