"""`kaireon processors add|list|waive` as real subprocesses against the server."""

from __future__ import annotations

import json

from tests.requests.test_cli_rest import _cli, _run


async def test_processors_cli(grpc_target: str, tenant: str):
    code, out, err = await _run(
        *_cli(
            grpc_target, tenant, "--json", "processors", "add", "cli-crm", "https://crm.example/h"
        )
    )
    assert code == 0, err
    added = json.loads(out)
    assert added["signingSecret"].startswith("whsec_")
    code, out, err = await _run(*_cli(grpc_target, tenant, "processors", "list"))
    assert code == 0, err
    assert "cli-crm" in out and "hmac" in out and "pending=0 delivered=0 dead=0" in out
    # An Ed25519 processor: the public key is printed, never a secret.
    code, out, err = await _run(
        *_cli(
            grpc_target,
            tenant,
            "processors",
            "add",
            "cli-signed",
            "https://signed.example/h",
            "--signing-scheme",
            "ed25519",
        )
    )
    assert code == 0, err
    assert " public key: whpk_" in out and "whsk_" not in out and "secret" not in out
    code, out, err = await _run(*_cli(grpc_target, tenant, "processors", "list"))
    assert "cli-signed" in out and "ed25519" in out
    # A name taken: refused with the reason, exit 1.
    code, out, err = await _run(
        *_cli(grpc_target, tenant, "processors", "add", "cli-crm", "https://crm.example/h")
    )
    assert code == 1 and "ALREADY_EXISTS" in err
    # Nothing to waive on a request that does not exist.
    code, out, err = await _run(
        *_cli(
            grpc_target,
            tenant,
            "processors",
            "waive",
            "9b2f9a52-4e4d-4a43-8a43-0d6a8d1c0e51",
            added["processor"]["id"],
            "--reason",
            "x",
        )
    )
    assert code == 1 and "NOT_FOUND" in err
    # Operators may not register.
    code, out, err = await _run(
        *_cli(grpc_target, tenant, "processors", "add", "x", "https://x.example/", role="operator")
    )
    assert code == 1 and "PERMISSION_DENIED" in err


async def test_a_malformed_receipt_time_is_a_usage_error(grpc_target: str, tenant: str):
    for bad in ("2026-13-01", "yesterday", "2026-01-01T25:00"):
        code, _, err = await _run(
            *_cli(grpc_target, tenant, "requests", "create", "access", "c1", "--received", bad)
        )
        assert code == 2, err
        assert "ISO 8601" in err and "Traceback" not in err
