"""`kaireon erase`: the real console script against the session server."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest

from kaireon.erasure.v1 import erasure_pb2
from kaireon_server.platform.db import Database
from tests.erasure.support import snapshot
from tests.support.server import ROOT, metadata

# Process-level: each test runs the `kaireon` CLI as a subprocess (slow tier).
pytestmark = pytest.mark.slow
KAIREON = str(Path(sys.executable).parent / "kaireon")
TOOL = str(ROOT / "tools" / "verify_erasure_receipt.py")


async def _run(*argv: str, stdin: bytes | None = None) -> tuple[int, str, str]:
    # Asynchronous: the server under test runs in this event loop.
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={k: v for k, v in os.environ.items() if not k.startswith("KAIREON_")},
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def _cli(target: str, tenant: str, role: str = "admin") -> list[str]:
    return [KAIREON, "--target", target, "--tenant", tenant, "--role", role]


async def test_dry_run_then_erase_with_a_verifiable_receipt(
    grpc_target: str, db: Database, seeded: str, key_dir: Path
):
    before = await snapshot(db, seeded)
    code, out, err = await _run(*_cli(grpc_target, seeded), "erase", "cust_00001", "--dry-run")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("would erase cust_00001: ")
    assert any(line.split() == ["interactionHistory", "5"] for line in lines)
    assert any(line.startswith("kept: consent_record (2 rows) - GDPR Art.") for line in lines)
    assert f"skipped (no customer_id column): ds_{seeded}_web_sessions" in lines
    assert not any(line.startswith("receipt:") for line in lines)
    after = await snapshot(db, seeded)
    assert {k: v for k, v in after.items() if k[0] != "audit_log"} == {
        k: v for k, v in before.items() if k[0] != "audit_log"
    }

    code, out, err = await _run(
        *_cli(grpc_target, seeded), "--json", "erase", "cust_00001", "--yes"
    )
    assert code == 0, err
    reply = json.loads(out)
    assert reply["success"] is True and reply["deletedCounts"]["interactionHistory"] == 5
    code, verified, err = await _run(
        sys.executable,
        TOOL,
        "-",
        "--public-key",
        str(key_dir / "cosign-test.pub"),
        stdin=out.encode(),
    )
    assert code == 0, verified + err
    assert verified.startswith("OK: erasure receipt verifies")
    assert ("interaction_history", "cust_00001") not in await snapshot(db, seeded)


async def test_human_output_of_an_erasure(grpc_target: str, seeded: str):
    code, out, err = await _run(*_cli(grpc_target, seeded), "erase", "cust_00002", "--yes")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("erased cust_00002: ")
    assert int(lines[0].split(": ")[1].split()[0]) > 0
    assert any(line.startswith("redacted: audit_log") for line in lines)
    assert lines[-1].startswith("receipt: sha256 ") and "signed by key" in lines[-1]


async def test_refusals_exit_1_with_the_status(grpc_target: str, stub, seeded: str):
    code, _, err = await _run(*_cli(grpc_target, seeded, "operator"), "erase", "cust_00001", "-y")
    assert code == 1 and "PERMISSION_DENIED" in err

    await stub.SetLegalHold(
        erasure_pb2.SetLegalHoldRequest(customer_id="cust_00001", reason="CASE-77"),
        metadata=metadata(seeded),
    )
    code, _, err = await _run(*_cli(grpc_target, seeded), "erase", "cust_00001", "--yes")
    assert code == 1 and "FAILED_PRECONDITION" in err and "CASE-77" in err
    code, out, err = await _run(*_cli(grpc_target, seeded), "erase", "cust_00001", "--dry-run")
    assert code == 0, err
    assert any(line.startswith("LEGAL HOLD: CASE-77") for line in out.splitlines())

    code, _, err = await _run(*_cli(grpc_target, seeded), "erase", "", "--yes")
    assert code == 1 and "INVALID_ARGUMENT" in err


async def test_usage_errors_exit_2(grpc_target: str, tenant: str):
    code, _, err = await _run(*_cli(grpc_target, tenant), "erase")
    assert code == 2 and "CUSTOMER" in err
