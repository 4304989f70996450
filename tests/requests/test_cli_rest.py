"""`kaireon requests` / `kaireon dsar list --overdue` as real subprocesses, and
the REST bindings through the adapter over real HTTP."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from kaireon_server.app import App

KAIREON = str(Path(sys.executable).parent / "kaireon")


async def _run(*argv: str) -> tuple[int, str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("KAIREON_")}
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=base
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def _cli(target: str, tenant: str, *args: str, role: str = "admin") -> list[str]:
    return [KAIREON, "--target", target, "--tenant", tenant, "--role", role, *args]


@pytest.mark.slow
async def test_the_cli_walks_a_request_through_its_lifecycle(grpc_target: str, tenant: str):
    code, out, err = await _run(
        *_cli(grpc_target, tenant, "--json", "requests", "create", "access", "cust_cli")
    )
    assert code == 0, err
    created = json.loads(out)
    assert created["state"] == "received" and created["regulation"] == "gdpr"
    rid = created["id"]
    steps = [
        (
            ["pause", rid, "--reason", "need the account email", "--requires-input"],
            "requires_input",
        ),
        (["resume", rid], "received"),
        (["extend", rid, "--reason", "complex", "--months", "1"], "received"),
        (["verify", rid, "--method", "email_link", "--evidence-ref", "T-1"], "awaiting_approval"),
        (["show", rid], "awaiting_approval"),
        (["deny", rid, "--reason", "manifestly unfounded"], "denied"),
    ]
    for args, state in steps:
        code, out, err = await _run(*_cli(grpc_target, tenant, "--json", "requests", *args))
        assert code == 0, (args, err)
        assert json.loads(out)["state"] == state, args
    # A refused transition: exit 1, the reason on stderr.
    code, out, err = await _run(
        *_cli(grpc_target, tenant, "requests", "cancel", rid, "--reason", "x")
    )
    assert code == 1 and "FAILED_PRECONDITION" in err and "denied" in err

    code, out, err = await _run(
        *_cli(
            grpc_target,
            tenant,
            "requests",
            "create",
            "erasure",
            "cust_cli_2",
            "--regulation",
            "lgpd",
            "--received",
            "2026-01-02T10:00:00+00:00",
        )
    )
    assert code == 0, err
    assert "2026-01-17" in out  # LGPD: 15 days
    # The regulations are the server's list (the CLI keeps no copy): it names them.
    code, out, err = await _run(
        *_cli(
            grpc_target,
            tenant,
            "requests",
            "create",
            "access",
            "cust_cli_3",
            "--regulation",
            "hipaa",
        )
    )
    assert code == 1 and "INVALID_ARGUMENT" in err and "gdpr, uk_gdpr, ccpa, lgpd" in err, err
    code, out, err = await _run(*_cli(grpc_target, tenant, "dsar", "list", "--overdue"))
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0].startswith("ID") and len(lines) == 2 and "lgpd" in lines[1]
    code, out, _ = await _run(*_cli(grpc_target, tenant, "requests", "list", "--state", "denied"))
    assert rid in out


async def _call(
    session: aiohttp.ClientSession, method: str, url: str, tenant: str, body: Any = None
) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json", "X-Tenant-Id": tenant, "X-User-Role": "admin"}
    data = json.dumps(body) if body is not None else None
    async with session.request(method, url, data=data, headers=headers) as response:
        return response.status, json.loads(await response.read())


async def test_rest_bindings(app: App, tenant: str):
    base = f"http://127.0.0.1:{app.http_port}/api/v1"
    async with aiohttp.ClientSession() as session:
        status, body = await _call(
            session,
            "POST",
            f"{base}/requests",
            tenant,
            {"kind": "erasure", "subjectId": "cust_rest", "regulation": "ccpa"},
        )
        assert status == 200, body
        request = body["request"]
        assert request["daysLeft"] == 45 and request["state"] == "received"
        rid = request["id"]
        status, body = await _call(
            session,
            "POST",
            f"{base}/requests/{rid}:pause",
            tenant,
            {"reason": "waiting", "requiresInput": True},
        )
        assert status == 200 and body["request"]["state"] == "requires_input"
        # Illegal: approve while paused -> 400 FAILED_PRECONDITION, nothing changed.
        status, body = await _call(session, "POST", f"{base}/requests/{rid}:approve", tenant, {})
        assert status == 400, body
        status, body = await _call(session, "GET", f"{base}/requests/{rid}", tenant)
        assert status == 200 and body["request"]["state"] == "requires_input"
        status, body = await _call(session, "GET", f"{base}/requests?state=requires_input", tenant)
        assert [r["id"] for r in body["requests"]] == [rid]
        status, body = await _call(session, "GET", f"{base}/request-policies", tenant)
        assert status == 200 and len(body["policies"]) == 4
        status, body = await _call(
            session, "GET", f"{base}/requests/00000000-0000-4000-8000-000000000000", tenant
        )
        assert status == 404
