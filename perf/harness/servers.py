"""The processes under test: the Kaireon server (as production runs it), the
REST adapter when the server does not serve it itself, and the ceiling echo server."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import psutil
from google.protobuf import wrappers_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

PERF_DIR = Path(__file__).resolve().parent.parent

KAIREON_SERVICES = {
    "provenance": "kaireon.provenance.v1.ProvenanceService",
    "erasure": "kaireon.erasure.v1.ErasureService",
    "dsar": "kaireon.dsar.v1.DsarService",
    "flow": "kaireon.flow.v1.FlowRunnerService",
    "audit": "kaireon.audit.v1.AuditService",
}


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


def _spawn(name: str, cmd: list[str], env: dict[str, str], workdir: Path) -> Managed:
    log = workdir / f"{name}.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, cwd=workdir)
    return Managed(name, proc, log)


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
        **os.environ,
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
    return _spawn(name, [sys.executable, "-m", "kaireon_server"], env, workdir)


def start_gateway(*, grpc_port: int, http_port: int, workdir: Path) -> Managed:
    """The standalone REST adapter (kaireon-gateway), for a server that does not embed it."""
    env = {**os.environ, "KAIREON_HTTP_PORT": str(http_port)}
    cmd = [
        sys.executable,
        "-m",
        "kaireon_server.gateway",
        "--grpc-target",
        f"127.0.0.1:{grpc_port}",
        "--host",
        "127.0.0.1",
        "--port",
        str(http_port),
        "--log-level",
        "WARNING",
    ]
    return _spawn("gateway", cmd, env, workdir)


def start_echo(
    *, port: int, workers: int, dsn: str, tenant: str, pool_max: int, workdir: Path
) -> Managed:
    # harness is installed (workspace member perf/): no PYTHONPATH needed.
    env = dict(os.environ)
    cmd = [sys.executable, "-m", "harness.echo_server", "--port", str(port)]
    cmd += ["--workers", str(workers), "--dsn", dsn, "--tenant", tenant]
    cmd += ["--pool-max", str(pool_max)]
    return _spawn("echo", cmd, env, workdir)


def health(port: int, service: str = "", timeout: float = 2.0) -> str:
    """SERVING / NOT_SERVING / SERVICE_UNKNOWN / UNREACHABLE."""
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
            return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.NOT_FOUND:
            return "SERVICE_UNKNOWN"
        return "UNREACHABLE"


def served_services(port: int) -> dict[str, bool]:
    """Which Kaireon services this server serves, by the health service."""
    return {key: health(port, name) == "SERVING" for key, name in KAIREON_SERVICES.items()}


def log_entries(server: Managed) -> list[dict[str, Any]]:
    """The server's JSON log lines (tracebacks and other text are skipped)."""
    entries = []
    for line in server.log.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                entries.append(json.loads(line))
    return entries


def serving_pids(server: Managed) -> set[int]:
    """Worker processes that logged "serving" and are still alive."""
    pids = {e.get("pid") for e in log_entries(server) if e.get("msg") == "serving"}
    return {p for p in pids if isinstance(p, int) and psutil.pid_exists(p)}


def worker_restarts(server: Managed) -> int:
    return sum(1 for e in log_entries(server) if e.get("msg") == "worker exited; restarting")


class HttpPortConflict(RuntimeError):
    """Workers restart because they cannot all bind KAIREON_HTTP_PORT."""


def wait_serving(
    server: Managed, port: int, workers: int, http_port: int | None = None, timeout: float = 120.0
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not server.alive():
            raise RuntimeError(f"server exited {server.proc.returncode}:\n{server.tail()}")
        if http_port is not None and worker_restarts(server) > 0:
            text = server.log.read_text(errors="replace")
            if f"error while attempting to bind on address ('127.0.0.1', {http_port})" in text:
                raise HttpPortConflict(
                    f"KAIREON_WORKERS={workers}: workers cannot share the REST port "
                    f"{http_port} (EADDRINUSE), they crash and restart"
                )
        # Every worker logs one "serving" line; the kernel only spreads
        # connections over the workers that are already listening.
        if len(serving_pids(server)) >= workers and health(port, timeout=1.0) == "SERVING":
            return
        time.sleep(0.3)
    raise RuntimeError(f"server not serving after {timeout:.0f}s:\n{server.tail()}")


def http_ready(port: int, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=timeout) as r:
            return bool(r.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def wait_http(proc: Managed | None, port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if http_ready(port):
            return True
        if proc is not None and not proc.alive():
            return False
        time.sleep(0.3)
    return False


def wait_echo(echo: Managed, port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    request = wrappers_pb2.BytesValue(value=b"ping")
    while time.monotonic() < deadline:
        if not echo.alive():
            raise RuntimeError(f"echo server exited:\n{echo.tail()}")
        try:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                call = channel.unary_unary(
                    "/kaireon.perf.v1.Echo/Echo",
                    request_serializer=wrappers_pb2.BytesValue.SerializeToString,
                    response_deserializer=wrappers_pb2.BytesValue.FromString,
                )
                if call(request, timeout=1.0).value == b"ping":
                    return
        except grpc.RpcError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"echo server not answering:\n{echo.tail()}")
