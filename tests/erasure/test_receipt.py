"""The signed erasure receipt verifies offline, and stops verifying after any change."""

from __future__ import annotations

import base64
import copy
import json
import subprocess
import sys
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from google.protobuf import json_format

from kaireon_client.receipt import verify_receipt
from kaireon_server.erasure.receipt import build_receipt
from kaireon_server.platform.canonical import parse_timestamp
from kaireon_server.platform.signing import NullSigner
from tests.erasure.support import audit_events, erase

KAIREON = str(Path(sys.executable).parent / "kaireon")
CUSTOMER = "cust_00001"


@pytest.fixture
def public_key(key_dir: Path, signing_key_path: Path) -> bytes:
    return (key_dir / "cosign-test.pub").read_bytes()


@pytest.fixture
async def response_json(stub, seeded: str) -> dict[str, Any]:
    reply = await erase(stub, seeded, CUSTOMER)
    value: dict[str, Any] = json_format.MessageToDict(
        reply, always_print_fields_with_no_presence=True
    )
    return value


def _problems(document: dict[str, Any], key: bytes, **kw: Any) -> list[str]:
    return verify_receipt(document, key, **kw).messages


async def test_receipt_binds_the_erasure_to_its_audit_row(
    audit_stub, seeded: str, response_json: dict[str, Any], public_key: bytes
):
    report = verify_receipt(response_json, public_key)
    assert report.messages == []
    payload = report.payload
    (event,) = await audit_events(audit_stub, seeded, "gdpr_erasure")
    assert payload["auditEventId"] == event.id
    assert payload["auditSeq"] == event.seq
    assert payload["auditIntegrityHash"] == event.integrity_hash
    assert parse_timestamp(payload["erasedAt"]) == event.create_time.ToDatetime(tzinfo=UTC)
    assert payload["tenantId"] == seeded and payload["customerId"] == CUSTOMER
    assert payload["deletedCounts"] == {
        k: int(v) for k, v in response_json["deletedCounts"].items()
    }
    assert payload["algorithm"] == "ecdsa-p256-sha256"
    assert payload["keyId"] == response_json["receipt"]["keyId"] != ""


def test_receipt_verifies_with_kaireon_verify_receipt(
    tmp_path: Path, response_json: dict[str, Any], public_key: bytes, key_dir: Path
):
    path = tmp_path / "response.json"
    path.write_text(json.dumps(response_json))
    ok = subprocess.run(
        [KAIREON, "verify", "receipt", str(path), "--key", str(key_dir / "cosign-test.pub")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.startswith("erasure receipt verified: tenant ")
    assert CUSTOMER not in ok.stdout  # the tool prints no personal data

    response_json["deletedCounts"]["delivery"] += 1
    path.write_text(json.dumps(response_json))
    bad = subprocess.run(
        [KAIREON, "verify", "receipt", "-", "--key", str(key_dir / "cosign-test.pub")],
        input=path.read_text(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 1  # content: the response differs from what was signed
    assert "FAIL content: deletedCounts differ from the signed payload" in bad.stdout

    response_json["deletedCounts"]["delivery"] -= 1
    response_json["receipt"]["signature"] = _flip(response_json["receipt"]["signature"])
    path.write_text(json.dumps(response_json))
    forged = subprocess.run(
        [KAIREON, "verify", "receipt", str(path), "--key", str(key_dir / "cosign-test.pub")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert forged.returncode == 4, forged.stdout  # the signature
    assert "FAIL signature: the signature does not verify" in forged.stdout


def _flip(signature: str) -> str:
    raw = bytearray(base64.b64decode(signature))
    raw[len(raw) // 2] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()


def _edit_payload(document: dict[str, Any], change: Any) -> None:
    payload = json.loads(document["receipt"]["canonicalPayload"])
    change(payload)
    document["receipt"]["canonicalPayload"] = json.dumps(payload, sort_keys=True)


TAMPERINGS = {
    "payload count": lambda d: _edit_payload(
        d, lambda p: p["deletedCounts"].update(interactionHistory=0)
    ),
    "payload customer": lambda d: _edit_payload(d, lambda p: p.update(customerId="cust_00009")),
    "payload tenant": lambda d: _edit_payload(d, lambda p: p.update(tenantId="other")),
    "payload audit hash": lambda d: _edit_payload(
        d, lambda p: p.update(auditIntegrityHash="0" * 64)
    ),
    "payload time": lambda d: _edit_payload(d, lambda p: p.update(erasedAt="2020-01-01T00:00:00Z")),
    "payload whitespace": lambda d: d["receipt"].update(
        canonicalPayload=d["receipt"]["canonicalPayload"].replace(",", ", ", 1)
    ),
    "digest": lambda d: d["receipt"].update(digestSha256="0" * 64),
    "signature": lambda d: d["receipt"].update(signature=_flip(d["receipt"]["signature"])),
    "signature removed": lambda d: d["receipt"].update(signature="unsigned"),
    "key id": lambda d: d["receipt"].update(keyId="f" * 64),
    "response customer": lambda d: d.update(customerId="cust_00003"),
    "response count": lambda d: d["deletedCounts"].update(suppression=7),
    "response total": lambda d: d.update(totalDeleted=d["totalDeleted"] + 1),
    "response skipped": lambda d: d.update(skippedTables=[]),
}


@pytest.mark.parametrize("name", sorted(TAMPERINGS))
def test_any_change_breaks_verification(
    name: str, response_json: dict[str, Any], public_key: bytes
):
    assert _problems(response_json, public_key) == []
    tampered = copy.deepcopy(response_json)
    TAMPERINGS[name](tampered)
    assert tampered != response_json
    assert _problems(tampered, public_key), name


def test_the_receipt_alone_verifies_and_a_foreign_key_fails(
    response_json: dict[str, Any], public_key: bytes
):
    assert _problems(response_json["receipt"], public_key) == []
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    other_pem = other.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    problems = _problems(response_json["receipt"], other_pem)
    assert "keyId is not the id of the given public key" in problems
    assert "the signature does not verify with the given public key" in problems


def _unsigned_payload() -> dict[str, Any]:
    return {
        "type": "kaireon.erasure.receipt.v1",
        "tenantId": "acme",
        "customerId": "cust_1",
        "deletedCounts": {"interactionHistory": 2},
        "totalDeleted": 2,
        "skippedTables": [],
        "auditEventId": "7d6e1f3c-0000-4000-8000-000000000000",
        "auditSeq": 3,
        "auditIntegrityHash": "ab" * 32,
        "erasedAt": "2026-01-01T00:00:00.000000Z",
        "algorithm": "none",
        "keyId": "",
    }


def test_unsigned_receipts_fail_unless_allowed(public_key: bytes):
    payload = _unsigned_payload()
    receipt = build_receipt(NullSigner(), payload)
    assert receipt.signature == "unsigned" and receipt.key_id == ""
    document = {
        "canonicalPayload": receipt.canonical_payload,
        "digestSha256": receipt.digest_sha256,
        "signature": receipt.signature,
        "keyId": receipt.key_id,
    }
    assert _problems(document, public_key) == [
        "the receipt is unsigned (the service had no signing key)"
    ]
    assert _problems(document, None, allow_unsigned=True) == []
    document["digestSha256"] = "1" * 64
    assert _problems(document, None, allow_unsigned=True) == [
        "digestSha256 does not match canonicalPayload"
    ]


GOOD_RECIPIENT = {"processorId": "p1", "name": "crm", "eventId": "e1", "state": "queued"}


@pytest.mark.parametrize(
    ("recipients", "problem"),
    [
        ([GOOD_RECIPIENT], None),
        ([], "payload recipients is not a non-empty list"),
        ("crm", "payload recipients is not a non-empty list"),
        ([{**GOOD_RECIPIENT, "extra": "x"}], "a payload recipient is not an object of"),
        ([{k: v for k, v in GOOD_RECIPIENT.items() if k != "eventId"}], "is not an object of"),
        ([{**GOOD_RECIPIENT, "name": ""}], "a payload recipient has an empty or non-text field"),
        ([{**GOOD_RECIPIENT, "state": 1}], "a payload recipient has an empty or non-text field"),
        ([{**GOOD_RECIPIENT, "state": "delivered"}], "state is not one of queued"),
        ([GOOD_RECIPIENT, {**GOOD_RECIPIENT, "name": "b"}], "payload recipients repeat an eventId"),
    ],
)
def test_the_recipients_list_is_checked_when_present(
    public_key: bytes, recipients: object, problem: str | None
):
    """Older receipts have no `recipients` (test above); a present one must be
    well formed, even when its signature is good."""
    payload = {**_unsigned_payload(), "recipients": recipients}
    receipt = build_receipt(NullSigner(), payload)
    document = {
        "canonicalPayload": receipt.canonical_payload,
        "digestSha256": receipt.digest_sha256,
        "signature": receipt.signature,
        "keyId": receipt.key_id,
    }
    problems = _problems(document, None, allow_unsigned=True)
    if problem is None:
        assert problems == []
    else:
        assert len(problems) == 1 and problem in problems[0], problems
