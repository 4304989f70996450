"""`--json` is stable (sorted keys, integers as integers); wrong input gets a clear message."""

from __future__ import annotations

import base64
import json
import socket
from pathlib import Path
from typing import Any

import pytest

from kaireon.audit.v1 import audit_pb2
from kaireon_client.cli.common import dumps_json, message_to_dict
from tests.cli.support import cli, run

pytestmark = pytest.mark.slow  # subprocesses of the real console script


def _floats(value: Any) -> list[float]:
    if isinstance(value, float):
        return [value]
    if isinstance(value, dict):
        return [f for v in value.values() for f in _floats(v)]
    if isinstance(value, list):
        return [f for v in value for f in _floats(v)]
    return []


def test_int64_fields_and_integral_struct_numbers_print_as_integers():
    event = audit_pb2.AuditEvent(seq=7, action="gdpr_erasure")
    event.changes.update({"zeta": 3, "alpha": {"rows": 12.0, "ratio": 0.5}})
    assert message_to_dict(event)["seq"] == 7  # proto3 JSON alone says "7"
    text = dumps_json(event)
    doc = json.loads(text)
    assert doc["changes"] == {"alpha": {"ratio": 0.5, "rows": 12}, "zeta": 3}
    assert '"rows": 12\n' in text and '"seq": 7,' in text
    assert text == json.dumps(doc, indent=2, sort_keys=True)
    # int64 inside repeated messages and maps too.
    page = audit_pb2.ListAuditEventsResponse(events=[event, audit_pb2.AuditEvent(seq=8)])
    assert [e["seq"] for e in message_to_dict(page)["events"]] == [7, 8]


async def test_json_of_the_audit_list_is_sorted_with_integers(grpc_target: str, seeded: str):
    base = cli(grpc_target, seeded)
    code, _, err = await run(*base, "erase", "cust_00001", "--yes")
    assert code == 0, err
    code, out, err = await run(*base, "--json", "audit", "list", "--action", "gdpr_erasure")
    assert code == 0, err
    doc = json.loads(out)
    (event,) = doc["events"]
    assert isinstance(event["seq"], int)
    # The whole text is what sort_keys writes: keys sorted at every depth, `changes` included.
    assert out == json.dumps(doc, indent=2, sort_keys=True) + "\n"
    assert event["changes"] and not [f for f in _floats(event["changes"]) if f.is_integer()]
    counts = event["changes"].get("deletedCounts") or event["changes"]
    assert any(isinstance(v, int) for v in counts.values())


async def test_signing_key_verifies_a_receipt_with_openssl(
    grpc_target: str, seeded: str, tmp_path: Path, signing_key_path: Path
):
    base = cli(grpc_target, seeded)
    code, out, err = await run(*base, "keys", "signing-key", "--out", "key.pem", cwd=tmp_path)
    assert code == 0, err
    assert out.startswith("signing key (ECDSA P-256) ") and out.endswith(" written to key.pem\n")
    pem = (tmp_path / "key.pem").read_text()
    assert pem.startswith("-----BEGIN PUBLIC KEY-----") and "PRIVATE" not in pem
    code, out, err = await run(*base, "--json", "erase", "cust_00002", "--yes")
    assert code == 0, err
    receipt = json.loads(out)["receipt"]
    (tmp_path / "payload.json").write_text(receipt["canonicalPayload"])
    (tmp_path / "payload.sig").write_bytes(base64.b64decode(receipt["signature"]))
    verify = ["openssl", "dgst", "-sha256", "-verify", "key.pem", "-signature", "payload.sig"]
    code, out, err = await run(*verify, "payload.json", cwd=tmp_path)
    assert (code, out) == (0, "Verified OK\n"), err
    (tmp_path / "payload.json").write_text(receipt["canonicalPayload"].replace("cust", "kust"))
    code, out, _ = await run(*verify, "payload.json", cwd=tmp_path)
    assert code == 1 and "Verification failure" in out
    # Without --out the PEM goes to stdout, the note to stderr.
    code, out, err = await run(*base, "keys", "signing-key")
    assert (code, out) == (0, pem) and "signing key" in err


async def test_the_session_server_has_no_log_key(grpc_target: str, seeded: str):
    code, out, err = await run(*cli(grpc_target, seeded), "keys", "log-key")
    assert code == 1 and out == ""
    assert "KAIREON_LOG_KEY is unset" in err or "no checkpoint yet" in err


async def test_decrypt_names_what_is_wrong_with_the_file(tmp_path: Path):
    plain = tmp_path / "export.json"
    plain.write_text('{"customerId":"cust_00001","counts":{}}')
    code, out, err = await run(KAIREON_OFFLINE, "dsar", "decrypt", str(plain))
    assert code == 2 and out == ""
    assert f"{plain} is not encrypted" in err and "no keys" not in err
    code, _, err = await run(KAIREON_OFFLINE, "dsar", "decrypt", str(tmp_path / "missing.json"))
    assert code == 2 and "cannot read" in err and "No such file" in err
    binary = tmp_path / "photo.png"
    binary.write_bytes(b"\x89PNG\r\n")
    code, _, err = await run(KAIREON_OFFLINE, "dsar", "decrypt", str(binary))
    assert code == 2 and "not an encrypted export (not JSON)" in err


async def test_flow_files_runs_and_tenants(grpc_target: str, seeded: str, tenant: str, tmp_path):
    base = cli(grpc_target, seeded)
    code, _, err = await run(*base, "flow", "run", str(tmp_path / "nope.yaml"))
    assert code == 2 and "cannot read" in err and "nope.yaml" in err
    bad = tmp_path / "bad.json"
    bad.write_text("{nodes: [")
    code, _, err = await run(*base, "flow", "run", str(bad))
    assert code == 2 and "is not valid YAML/JSON" in err
    code, _, err = await run(*base, "flow", "status", "no-such-run")
    assert code == 1 and "NOT_FOUND" in err
    flow = tmp_path / "flow.yaml"
    flow.write_text(
        "name: tiny\nnodes:\n  - id: rows\n    type: source.inline\n"
        "    config: {records: [{a: 1}]}\n"
    )
    code, _, err = await run(*base, "flow", "run", str(flow), "--run-id", "cli-run-1")
    assert code == 0, err
    # Another tenant cannot tell the run exists.
    code, _, err = await run(*cli(grpc_target, f"{tenant}x"), "flow", "status", "cli-run-1")
    assert code == 1 and "NOT_FOUND" in err


async def test_no_server_and_no_identity_get_hints(grpc_target: str, seeded: str):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code, _, err = await run(
        KAIREON_OFFLINE, "--target", f"127.0.0.1:{port}", "--timeout", "5", "holds", "list"
    )
    assert code == 1 and "UNAVAILABLE" in err
    assert f"hint: is a server listening on 127.0.0.1:{port}?" in err
    code, _, err = await run(KAIREON_OFFLINE, "--target", grpc_target, "holds", "list")
    assert code == 1 and "UNAUTHENTICATED" in err and "hint: give an identity" in err
    code, _, err = await run(KAIREON_OFFLINE, "--target", grpc_target, "--timeout", "x", "audit")
    assert code == 2
    for hostile in ("nan", "inf", "-1", "0", "1e999"):
        code, _, err = await run(
            KAIREON_OFFLINE, "--target", grpc_target, f"--timeout={hostile}", "audit"
        )
        assert code == 2 and "--timeout" in err, hostile


KAIREON_OFFLINE = cli("unused", "unused")[0]
