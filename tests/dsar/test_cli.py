"""`kaireon dsar`: the real console script against real servers, and the offline verifier."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from pathlib import Path

import pytest

from kaireon_client.checksum import read_checksum_file
from kaireon_server.platform.db import Database
from tests.dsar.conftest import add_interactions, assert_canonical, new_key_spec, worker_env
from tests.support.server import ROOT

# Process-level: each test runs the `kaireon` CLI as a subprocess (slow tier).
pytestmark = pytest.mark.slow
KAIREON = str(Path(sys.executable).parent / "kaireon")
VERIFY_TOOL = str(ROOT / "tools" / "verify_provenance.py")


async def _run(*argv: str, env: dict[str, str] | None = None) -> tuple[int, bytes, str]:
    # Asynchronous: the servers under test run in this event loop.
    base = {k: v for k, v in os.environ.items() if not k.startswith("KAIREON_")}
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**base, **(env or {})},
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode is not None
    return proc.returncode, out, err.decode()


def _cli(target: str, tenant: str, role: str = "operator", *flags: str) -> list[str]:
    return [KAIREON, "--target", target, "--tenant", tenant, "--role", role, *flags, "dsar"]


async def test_export_writes_a_package_the_offline_tool_verifies(
    grpc_target: str, seeded: str, key_dir: Path, tmp_path: Path
):
    out = tmp_path / "pkg" / "export.json"
    code, stdout, err = await _run(
        *_cli(grpc_target, seeded), "export", "cust_00001", "--out", str(out), "--verify"
    )
    assert code == 0, err
    assert "PASS digest" in stdout.decode() and "verified" in stdout.decode()
    assert "100% completed" in err  # the progress line, fed by the watch stream
    document = assert_canonical(out.read_bytes())
    assert document["customerId"] == "cust_00001" and document["counts"]["interactions"] == 5
    checksum = Path(f"{out}.sha256").read_text()  # noqa: ASYNC240 - a small file
    digest = read_checksum_file(Path(f"{out}.sha256"))
    assert checksum == f"{digest}  export.json\n"
    # The format coreutils checks: `sha256sum -c` in the export's directory.
    checked = await asyncio.create_subprocess_exec(
        "sha256sum", "-c", "export.json.sha256", cwd=out.parent, stdout=asyncio.subprocess.PIPE
    )
    assert (await checked.communicate())[0] == b"export.json: OK\n" and checked.returncode == 0
    verify = [
        sys.executable,
        VERIFY_TOOL,
        "--body",
        str(out),
        "--digest",
        digest,
        "--signature-file",
        f"{out}.sig",
        "--public-key",
        str(key_dir / "cosign-test.pub"),
    ]
    code, stdout, err = await _run(*verify)
    assert code == 0, stdout + err.encode()
    assert b"PASS signature" in stdout and b"PASS canonical" in stdout
    # One changed byte and the package no longer verifies.
    body = out.read_bytes()
    out.write_bytes(body.replace(b"cust_00001", b"cust_00009", 1))
    code, stdout, _ = await _run(*verify)
    assert code == 1 and b"FAIL digest" in stdout and b"FAIL signature" in stdout


async def test_export_to_stdout_then_status_and_list(grpc_target: str, seeded: str):
    code, stdout, err = await _run(*_cli(grpc_target, seeded), "export", "cust_00002", "--quiet")
    assert code == 0, err
    document = assert_canonical(stdout)
    assert document["customerId"] == "cust_00002"
    request_id = document["requestId"]
    code, stdout, err = await _run(
        *_cli(grpc_target, seeded, "operator", "--json"), "status", request_id
    )
    assert code == 0, err
    status = json.loads(stdout)
    assert status["status"] == "completed" and "exportedData" not in status
    code, stdout, err = await _run(*_cli(grpc_target, seeded), "list", "--status", "completed")
    assert code == 0, err
    assert request_id in stdout.decode() and "completed" in stdout.decode()
    code, _, err = await _run(*_cli(grpc_target, seeded, "viewer"), "list")
    assert code == 1 and "PERMISSION_DENIED" in err


async def test_the_progress_bar_follows_a_running_export(
    seeded: str, db: Database, server_with_env, no_session_workers
):
    # Long enough (several seconds) that a CLI starting on a loaded machine still
    # sees several progress steps; the assertion is about order, not timing.
    await add_interactions(db, seeded, "cust_00001", 6000)
    app = await server_with_env(
        **worker_env(KAIREON_DSAR_CHUNK_BYTES="4096", KAIREON_DSAR_THROTTLE_MS="30")
    )
    target = f"127.0.0.1:{app.grpc_port}"
    code, stdout, err = await _run(*_cli(target, seeded), "export", "cust_00001")
    assert code == 0, err
    percents = [int(p) for p in re.findall(r"\] +(\d+)% processing", err)]
    assert len(percents) >= 3 and percents == sorted(percents) and 0 < max(percents) < 100
    assert "100% completed" in err.splitlines()[-4]  # then the summary
    assert assert_canonical(stdout)["counts"]["interactions"] == 6005


async def test_encrypted_export_decrypts_offline_and_tampering_is_caught(
    seeded: str, server_with_env, tmp_path: Path
):
    spec = new_key_spec("v1", "v2")
    app = await server_with_env(KAIREON_ENCRYPTION_KEYS=spec)
    target = f"127.0.0.1:{app.grpc_port}"
    envelope = tmp_path / "export.enc.json"
    code, _, err = await _run(
        *_cli(target, seeded), "export", "cust_00003", "--encrypt", "--out", str(envelope)
    )
    assert code == 0, err
    assert json.loads(envelope.read_bytes())["data"]["keyVersion"] == "v2"

    keys = {"KAIREON_ENCRYPTION_KEYS": spec}
    plain = tmp_path / "export.json"
    code, stdout, err = await _run(
        KAIREON, "dsar", "decrypt", str(envelope), "--out", str(plain), env=keys
    )
    assert code == 0, err
    assert "key v2" in stdout.decode()
    assert assert_canonical(plain.read_bytes())["customerId"] == "cust_00003"
    # Keys from a file work the same; stdout gets the plaintext.
    keys_file = tmp_path / "keys.txt"
    keys_file.write_text(spec)
    code, stdout, err = await _run(
        KAIREON, "dsar", "decrypt", str(envelope), "--keys-file", str(keys_file)
    )
    assert code == 0 and stdout == plain.read_bytes(), err

    # A changed ciphertext character: authentication fails, nothing is written.
    body = bytearray(envelope.read_bytes())
    at = body.index(b'"ciphertext":"') + 40
    body[at] = ord("A") if body[at] != ord("A") else ord("B")
    envelope.write_bytes(bytes(body))
    plain.unlink()
    code, _, err = await _run(
        KAIREON, "dsar", "decrypt", str(envelope), "--out", str(plain), env=keys
    )
    assert code == 3 and "authentication failed" in err
    assert not plain.exists()
    code, _, err = await _run(KAIREON, "dsar", "decrypt", str(envelope))
    assert code == 2 and "KAIREON_ENCRYPTION_KEYS" in err
