"""The real `kaireon-server` process: graceful SIGTERM, and the embedded PostgreSQL default."""

from __future__ import annotations

import asyncio
import json
import os
import signal

import asyncpg
import grpc
import pytest

from kaireon.audit.v1 import audit_pb2, audit_pb2_grpc
from kaireon_server.platform import event_loop
from tests.support.pg import create_database, drop_database
from tests.support.server import ServerProcess, base_env, metadata

pytestmark = pytest.mark.slow


async def test_sigterm_lets_in_flight_call_finish_and_exits_zero(pg_admin_dsn, tenant) -> None:
    # Its own database: the table lock below would otherwise queue behind (and
    # then hold up) every audited write of the session's servers, and wait
    # without end behind a transaction another test left open.
    dsn = await create_database(pg_admin_dsn, "kaireon_sigterm")
    server = ServerProcess(base_env(dsn)).start()  # applies the migrations
    blocker = await asyncpg.connect(dsn, server_settings={"lock_timeout": "20s"})
    try:
        # Hold a lock the RPC must wait for, so it is in flight when SIGTERM arrives.
        tx = blocker.transaction()
        await tx.start()
        # VerifyChain reads the chain head first, then the rows.
        await blocker.execute("LOCK TABLE audit_chain_head, audit_log IN ACCESS EXCLUSIVE MODE")
        async with grpc.aio.insecure_channel(server.target) as channel:
            stub = audit_pb2_grpc.AuditServiceStub(channel)
            call = asyncio.ensure_future(
                stub.VerifyChain(
                    audit_pb2.VerifyChainRequest(), metadata=metadata(tenant), timeout=30
                )
            )
            await asyncio.sleep(1.0)
            assert not call.done()
            server.signal(signal.SIGTERM)
            await asyncio.sleep(1.0)
            assert server.proc is not None and server.proc.poll() is None  # still draining
            await tx.rollback()
            reply = await call
            assert reply.valid
        code = await asyncio.to_thread(server.wait, 30)
        assert code == 0
        assert any('"stopped"' in line for line in server.log_lines)
    finally:
        await blocker.close()
        server.stop()
        await drop_database(pg_admin_dsn, dsn)


async def test_embedded_default_survives_restart(tmp_path) -> None:
    env = {
        "KAIREON_DATA_DIR": str(tmp_path / "data"),
        "KAIREON_GRPC_PORT": "0",
        "KAIREON_HTTP_PORT": "0",
        "KAIREON_GRPC_HOST": "127.0.0.1",
        "DATABASE_URL": "",
    }
    first = ServerProcess(env, ["--demo"]).start(timeout=120)
    try:
        async with grpc.aio.insecure_channel(first.target) as channel:
            stub = audit_pb2_grpc.AuditServiceStub(channel)
            before = await stub.VerifyChain(
                audit_pb2.VerifyChainRequest(), metadata=metadata("demo")
            )
        assert before.valid and before.rows_checked > 0
    finally:
        assert first.stop() == 0
    assert (tmp_path / "data" / "pgdata" / "PG_VERSION").exists()
    second = ServerProcess(env, ["--demo"]).start(timeout=120)
    try:
        async with grpc.aio.insecure_channel(second.target) as channel:
            stub = audit_pb2_grpc.AuditServiceStub(channel)
            after = await stub.VerifyChain(
                audit_pb2.VerifyChainRequest(), metadata=metadata("demo")
            )
        # Same data (the demo seed did not run twice) and still a valid chain.
        assert after.valid and after.rows_checked == before.rows_checked
        assert after.head_hash == before.head_hash
    finally:
        assert second.stop() == 0
    assert not any("DATABASE_URL" in line for line in second.log_lines)


def test_missing_identity_source_is_a_configuration_error(tmp_path) -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "kaireon_server"],
        env={"PATH": "/usr/bin:/bin", "KAIREON_DATA_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "no identity source" in result.stderr


@pytest.mark.parametrize(
    ("program", "variable", "value"),
    [
        ("kaireon_server", "KAIREON_LOG_LEVEL", "verbose"),
        ("kaireon_server", "KAIREON_LOG_LEVEL", "10"),
        ("kaireon_server", "KAIREON_LOG_LEVEL", "warn ing"),
        ("kaireon_server", "KAIREON_EVENT_LOOP", "tokio"),
        ("kaireon_server.gateway", "KAIREON_EVENT_LOOP", "tokio"),
    ],
)
def test_an_unknown_choice_is_a_configuration_error(
    tmp_path, program: str, variable: str, value: str
) -> None:
    """Exit 2 naming the variable, not a traceback (exit 1) from the logging
    module or the event loop after the settings were read."""
    import subprocess
    import sys

    args = ["--grpc-target", "127.0.0.1:1"] if program.endswith("gateway") else []
    result = subprocess.run(
        [sys.executable, "-m", program, *args],
        env={
            "PATH": "/usr/bin:/bin",
            "KAIREON_DATA_DIR": str(tmp_path),
            "KAIREON_TRUST_HEADERS": "true",
            variable: value,
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"configuration error: {variable} must be one of" in result.stderr
    assert "Traceback" not in result.stderr


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_multi_process_workers_share_the_port(database_url, tenant) -> None:
    import subprocess
    import sys
    import time

    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from tests.support.server import ROOT

    port, http_port = _free_port(), _free_port()
    env = {
        **base_env(database_url),
        "KAIREON_GRPC_PORT": str(port),
        "KAIREON_HTTP_PORT": str(http_port),
        "KAIREON_WORKERS": "2",
    }
    proc = subprocess.Popen(  # noqa: ASYNC220 - read in a thread below
        [sys.executable, "-m", "kaireon_server"],
        env={**os.environ, **env},
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        serving_pids: set[int] = set()
        loops: set[str] = set()
        deadline = time.monotonic() + 60
        assert proc.stderr is not None
        while len(serving_pids) < 2 and time.monotonic() < deadline:
            line = await asyncio.to_thread(proc.stderr.readline)
            entry = json.loads(line) if line.startswith("{") else {}
            if entry.get("msg") == "serving":
                serving_pids.add(entry["pid"])
                loops.add(entry["event_loop"])
        assert len(serving_pids) == 2, "two distinct worker processes must report serving"
        # Each worker runs on the configured loop (uvloop unless the run says asyncio).
        assert loops == {event_loop.configured()}
        assert proc.pid not in serving_pids
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest()
            )
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            stub = audit_pb2_grpc.AuditServiceStub(channel)
            reply = await stub.VerifyChain(
                audit_pb2.VerifyChainRequest(), metadata=metadata(tenant)
            )
            assert reply.valid
        import aiohttp

        async with aiohttp.ClientSession() as http:
            for _ in range(4):  # connections spread over both workers' adapters
                async with http.get(f"http://127.0.0.1:{http_port}/healthz") as response:
                    assert response.status == 200
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 60) == 0
        remaining = await asyncio.to_thread(proc.stderr.read)
        assert "worker exited; restarting" not in remaining
    finally:
        if proc.poll() is None:
            proc.kill()
