"""`kaireon provenance`: the real console script against the session server."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
from pathlib import Path

import pytest

from kaireon_client.checksum import read_checksum_file
from tests.provenance.conftest import AFTER_CHANGE, fetch, running_server
from tests.support.server import ROOT, base_env

# Process-level: each test runs the `kaireon` CLI as a subprocess (slow tier).
pytestmark = pytest.mark.slow
KAIREON = str(Path(sys.executable).parent / "kaireon")
TOOL = str(ROOT / "tools" / "verify_provenance.py")


async def _run(*argv: str) -> tuple[int, bytes, str]:
    # Asynchronous: the server under test runs in this event loop.
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={k: v for k, v in os.environ.items() if not k.startswith("KAIREON_")},
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out, err.decode()


def _read(path: str) -> str:
    return Path(path).read_text()


def _cli(target: str, tenant: str, role: str = "admin") -> list[str]:
    return [KAIREON, "--target", target, "--tenant", tenant, "--role", role, "provenance"]


async def test_verify_and_out_write_a_bundle_the_tool_accepts(
    grpc_target, seeded, tmp_path, key_dir
):
    out = tmp_path / "bundle.json"
    code, stdout, err = await _run(
        *_cli(grpc_target, seeded), AFTER_CHANGE, "--verify", "--out", str(out)
    )
    assert code == 0, err
    lines = stdout.decode().splitlines()
    assert lines[0].startswith(f"kaireon.provenance.v1 bundle of {AFTER_CHANGE}: ")
    assert "PASS signature: ECDSA P-256 SHA-256 signature verifies" in lines
    assert lines[-1] == "verified"
    body = out.read_bytes()
    digest = read_checksum_file(Path(f"{out}.sha256"))
    assert _read(f"{out}.sha256") == f"{digest}  bundle.json\n"
    checked = await asyncio.create_subprocess_exec(
        "sha256sum", "-c", "bundle.json.sha256", cwd=out.parent, stdout=asyncio.subprocess.PIPE
    )
    assert (await checked.communicate())[0] == b"bundle.json: OK\n" and checked.returncode == 0
    assert hashlib.sha256(body).hexdigest() == digest
    assert lines[1] == f"sha256 {digest}"
    code, verified, err = await _run(
        sys.executable,
        TOOL,
        "--body",
        str(out),
        "--digest",
        digest,
        "--signature-file",
        f"{out}.sig",
        "--public-key",
        str(key_dir / "cosign-test.pub"),
    )
    assert code == 0, verified.decode() + err
    assert verified.decode().splitlines()[-1] == "verified"


async def test_without_out_the_bytes_go_to_stdout_unchanged(grpc_target, channel, seeded):
    code, stdout, err = await _run(*_cli(grpc_target, seeded), AFTER_CHANGE)
    assert code == 0, err
    assert stdout == (await fetch(channel, seeded, AFTER_CHANGE)).body
    assert "sha256 " + hashlib.sha256(stdout).hexdigest() in err


async def test_json_summary(grpc_target, seeded):
    code, stdout, err = await _run(
        KAIREON,
        "--target",
        grpc_target,
        "--tenant",
        seeded,
        "--role",
        "admin",
        "--json",
        "provenance",
        AFTER_CHANGE,
        "--verify",
    )
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["verification"]["ok"] is True
    assert summary["bundle"]["decisionTrace"]["id"] == AFTER_CHANGE
    assert (
        summary["digestSha256"]
        == hashlib.sha256(
            json.dumps(summary["bundle"], separators=(",", ":"), sort_keys=True).encode()
        ).hexdigest()
    )


async def test_unsigned_deployment_fails_verification_with_exit_3(database_url, seeded, tmp_path):
    async with running_server(base_env(database_url)) as unsigned:
        target = f"127.0.0.1:{unsigned.grpc_port}"
        code, stdout, _ = await _run(
            *_cli(target, seeded), AFTER_CHANGE, "--verify", "--out", str(tmp_path / "b.json")
        )
    assert code == 3
    assert 'FAIL signature: artifact is "unsigned"' in stdout.decode()
    assert "signature: UNSIGNED" in stdout.decode()


async def test_errors_exit_1_with_the_status(grpc_target, seeded):
    code, _, err = await _run(*_cli(grpc_target, seeded, role="viewer"), AFTER_CHANGE)
    assert code == 1
    assert err.startswith("kaireon: PERMISSION_DENIED:")
    code, _, err = await _run(*_cli(grpc_target, seeded), "dec_missing")
    assert code == 1
    assert err.strip() == "kaireon: NOT_FOUND: no decision with this id"
