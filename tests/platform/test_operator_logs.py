"""A real `kaireon-server` process: every stderr line is JSON, from start to SIGTERM;
start-up names the loaded keys (ids and versions, no key material); shutdown
says what it drained. The same server serves the audit-log key to `kaireon keys`."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from kaireon_client.tlog.checkpoint import tenant_log_verifier
from tests.support.server import ServerProcess, base_env

pytestmark = pytest.mark.slow

KAIREON = str(Path(sys.executable).parent / "kaireon")
LOG_NAME = "kaireon.opsx-test"


async def _cli(*argv: str, cwd: Path) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        KAIREON,
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=cwd,
        env={k: v for k, v in os.environ.items() if not k.startswith(("KAIREON_", "GRPC_"))},
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def _entries(lines: list[str]) -> list[dict[str, Any]]:
    entries = []
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            pytest.fail(f"a log line that is not JSON: {line!r}")
        assert isinstance(entry, dict), line
        entries.append(entry)
    return entries


def _one(entries: list[dict[str, Any]], msg: str) -> dict[str, Any]:
    found = [e for e in entries if e.get("msg") == msg]
    assert len(found) == 1, [e.get("msg") for e in entries]
    return found[0]


async def test_json_lines_from_start_to_sigterm_with_keys_and_drain(
    database_url: str, signing_key_path: Path, tenant: str, tmp_path: Path
) -> None:
    signing_pem = signing_key_path.read_bytes()  # noqa: ASYNC240 - a small file
    log_key = Ed25519PrivateKey.generate()
    log_pem = log_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    aes = {v: base64.b64encode(os.urandom(32)).decode() for v in ("v1", "v2")}
    env = base_env(
        database_url,
        COSIGN_KEY=str(signing_key_path),
        KAIREON_LOG_KEY=log_pem,
        KAIREON_LOG_NAME=LOG_NAME,
        KAIREON_TLOG_INTERVAL="0.05",
        KAIREON_ENCRYPTION_KEYS=",".join(f"{v}:{k}" for v, k in aes.items()),
    )
    server = ServerProcess(env).start()
    try:
        base = ["--target", server.target, "--tenant", tenant, "--role", "admin"]
        code, _, err = await _cli(
            *base, "holds", "set", "cust_1", "--reason", "CASE-1", cwd=tmp_path
        )
        assert code == 0, err
        # The audited change reaches a checkpoint within a few integrator rounds.
        deadline = time.monotonic() + 60
        while True:
            code, out, err = await _cli(*base, "keys", "log-key", "--out", "log.vkey", cwd=tmp_path)
            if code == 0 or time.monotonic() > deadline:
                break
            assert "no checkpoint yet" in err, err
            await asyncio.sleep(0.2)
        assert code == 0, err
        vkey = (tmp_path / "log.vkey").read_text()
        assert vkey == tenant_log_verifier(log_key.public_key(), LOG_NAME, tenant).vkey() + "\n"
        assert out.startswith(f"audit-log key {LOG_NAME}/audit/{tenant} ")
    finally:
        server.signal(signal.SIGTERM)
        code = await asyncio.to_thread(server.wait, 60)
    assert code == 0
    deadline = time.monotonic() + 10  # the reader thread may trail the exit a little
    while not any('"stopped"' in line for line in server.log_lines):
        assert time.monotonic() < deadline, server.log_lines[-5:]
        await asyncio.sleep(0.05)

    entries = _entries(server.log_lines)
    keys = _one(entries, "keys loaded")
    public_der = (
        serialization.load_pem_private_key(signing_pem, None)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    assert keys["signing_key_id"] == hashlib.sha256(public_der).hexdigest()
    raw = log_key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    assert keys["log_name"] == LOG_NAME
    assert keys["log_key_fingerprint"] == hashlib.sha256(raw).hexdigest()[:16]
    assert keys["encryption_key_versions"] == ["v1", "v2"]
    assert keys["encryption_active_key"] == "v2"
    text = "".join(server.log_lines)
    secrets = [*aes.values(), log_pem.splitlines()[1], signing_pem.decode().splitlines()[1]]
    assert not [s for s in secrets if s in text], "key material in the log"

    draining = _one(entries, "draining")
    for field in ("inflight_calls", "dsar_jobs_in_progress", "flow_runs_in_progress"):
        assert isinstance(draining[field], int) and draining[field] >= 0, draining
    assert _one(entries, "stopped")["drained"]["flow_runs_in_progress"] == 0
