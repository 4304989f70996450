"""Start the real server for tests: in-process (App) or as a subprocess (kaireon-server)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import grpc
import jwt

ROOT = Path(__file__).resolve().parents[2]
JWT_SECRET = "test-secret-generated-for-the-test-suite-only-0123456789"


def metadata(tenant: str, role: str = "admin") -> tuple[tuple[str, str], ...]:
    return (("x-tenant-id", tenant), ("x-user-role", role))


def bearer(
    tenant: str, role: str, *, secret: str = JWT_SECRET, expires_in: int = 300, **extra: Any
) -> tuple[tuple[str, str], ...]:
    claims = {
        "tenant_id": tenant,
        "role": role,
        "sub": "test-user",
        "exp": int(time.time()) + expires_in,
        **extra,
    }
    return (("authorization", f"Bearer {jwt.encode(claims, secret, algorithm='HS256')}"),)


def base_env(database_url: str, **overrides: str) -> dict[str, str]:
    env = {
        "DATABASE_URL": database_url,
        "KAIREON_TRUST_HEADERS": "true",
        "KAIREON_JWT_HS256_SECRET": JWT_SECRET,
        "KAIREON_GRPC_HOST": "127.0.0.1",
        "KAIREON_GRPC_PORT": "0",
        "KAIREON_HTTP_PORT": "auto",
        "KAIREON_HEALTH_INTERVAL": "0.5",
        # Processor webhooks: loopback receivers, quick retries (tests/requests/).
        "KAIREON_PROCESSOR_ALLOW_PRIVATE_URLS": "true",
        "KAIREON_PROCESSOR_BACKOFF_SECONDS": "0.2",
        "KAIREON_PROCESSOR_MAX_ATTEMPTS": "3",
        "KAIREON_PROCESSOR_TIMEOUT_SECONDS": "2",
    }
    env.update(overrides)
    return env


# Every subprocess server's log, scanned for personal data at the end of the session.
ALL_SERVER_LOGS: list[list[str]] = []


@dataclass
class ServerProcess:
    """`kaireon-server` in a subprocess; reads its JSON log to learn the bound ports."""

    env: Mapping[str, str]
    args: list[str] = field(default_factory=list)
    proc: subprocess.Popen[str] | None = None
    grpc_port: int = 0
    http_port: int = 0
    log_lines: list[str] = field(default_factory=list)
    # Runs the server under another command, e.g. `ip netns exec NS` (tests/support/netns.py).
    prefix: list[str] = field(default_factory=list)

    def start(self, timeout: float = 60.0) -> ServerProcess:
        env = {**os.environ, **self.env}
        self.proc = subprocess.Popen(
            [*self.prefix, sys.executable, "-m", "kaireon_server", *self.args],
            env=env,
            cwd=str(ROOT),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stderr is not None
        ALL_SERVER_LOGS.append(self.log_lines)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"server exited early: {''.join(self.log_lines)[-3000:]}")
                continue
            self.log_lines.append(line)
            entry = _parse(line)
            if entry.get("msg") == "serving":
                self.grpc_port = int(entry["grpc_port"])
                self.http_port = int(entry.get("http_port") or 0)
                _drain_in_background(self.proc.stderr, self.log_lines)
                return self
        raise TimeoutError("server did not start in time")

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def signal(self, sig: int = signal.SIGTERM) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(timeout=10)


def _parse(line: str) -> dict[str, Any]:
    try:
        value = json.loads(line)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _drain_in_background(stream: IO[str], sink: list[str]) -> None:
    import threading

    def pump() -> None:
        for line in stream:
            sink.append(line)

    threading.Thread(target=pump, daemon=True).start()


async def wait_for_channel(target: str, timeout: float = 10.0) -> grpc.aio.Channel:
    channel = grpc.aio.insecure_channel(target)
    await asyncio.wait_for(channel.channel_ready(), timeout)
    return channel
