"""Verify an erasure receipt offline: canonical form, digest, ECDSA signature, key id.

    python tools/verify_erasure_receipt.py RESPONSE.json --public-key cosign.pub
    kaireon --json erase cust_00042 | \
        python tools/verify_erasure_receipt.py - --public-key cosign.pub

The input is the JSON of an EraseCustomerResponse (REST body, `kaireon --json
erase`, grpcurl output) or of its `receipt` alone, with camelCase or snake_case
field names. Given a whole response, its customerId, deletedCounts,
totalDeleted and skippedTables must equal the signed payload's. The public key
must come from the operator, never from the receipt itself.

Exit status 0 when every check passes, 1 when one fails, 2 on unusable input.
Needs only `cryptography` and `rfc8785` (no server code), so an auditor can run
it anywhere.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

RECEIPT_TYPE = "kaireon.erasure.receipt.v1"
ALGORITHM = "ecdsa-p256-sha256"
UNSIGNED = "unsigned"


def _field(doc: Mapping[str, Any], camel: str, snake: str) -> Any:
    return doc[camel] if camel in doc else doc.get(snake)


def _key_id(public_key: ec.EllipticCurvePublicKey) -> str:
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def load_public_key(pem: bytes) -> ec.EllipticCurvePublicKey:
    key = serialization.load_pem_public_key(pem)
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("the public key must be an ECDSA P-256 key")
    return key


def _counts(value: Any) -> dict[str, int]:
    # protojson may print int64 as strings; the receipt holds numbers.
    if not isinstance(value, Mapping):
        return {}
    return {str(k): int(v) for k, v in value.items()}


def _check_response(response: Mapping[str, Any], payload: Mapping[str, Any]) -> list[str]:
    problems = []
    if _field(response, "customerId", "customer_id") != payload.get("customerId"):
        problems.append("customerId differs from the signed payload")
    counts = _field(response, "deletedCounts", "deleted_counts")
    if _counts(counts) != _counts(payload.get("deletedCounts")):
        problems.append("deletedCounts differ from the signed payload")
    total = _field(response, "totalDeleted", "total_deleted")
    if total is None or int(total) != payload.get("totalDeleted"):
        problems.append("totalDeleted differs from the signed payload")
    skipped = _field(response, "skippedTables", "skipped_tables") or []
    if list(skipped) != payload.get("skippedTables"):
        problems.append("skippedTables differ from the signed payload")
    return problems


def _check_payload(payload: Any) -> list[str]:
    if not isinstance(payload, dict):
        return ["canonicalPayload is not a JSON object"]
    problems = []
    if payload.get("type") != RECEIPT_TYPE:
        problems.append(f"payload type is not {RECEIPT_TYPE}")
    counts = payload.get("deletedCounts")
    if not isinstance(counts, dict) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in counts.values()
    ):
        problems.append("payload deletedCounts is not a map of counts")
    elif payload.get("totalDeleted") != sum(counts.values()):
        problems.append("payload totalDeleted is not the sum of deletedCounts")
    for name in ("tenantId", "customerId", "auditEventId", "auditIntegrityHash", "erasedAt"):
        if not isinstance(payload.get(name), str) or not payload[name]:
            problems.append(f"payload {name} is missing")
    return problems


def verify_receipt(
    document: Mapping[str, Any],
    public_key_pem: bytes | None,
    *,
    allow_unsigned: bool = False,
) -> tuple[list[str], dict[str, Any]]:
    """Problems found (empty = valid) and the decoded payload."""
    receipt = document.get("receipt", document)
    if not isinstance(receipt, Mapping):
        return ["no receipt in the document"], {}
    text = _field(receipt, "canonicalPayload", "canonical_payload")
    digest = _field(receipt, "digestSha256", "digest_sha256")
    signature = _field(receipt, "signature", "signature")
    key_id = _field(receipt, "keyId", "key_id") or ""
    if not isinstance(text, str) or not text:
        return ["the receipt has no canonicalPayload"], {}
    data = text.encode("utf-8")
    try:
        payload = json.loads(data)
    except ValueError:
        return ["canonicalPayload is not JSON"], {}
    problems = _check_payload(payload)
    if not isinstance(payload, dict):
        return problems, {}
    if bytes(rfc8785.dumps(payload)) != data:
        problems.append("canonicalPayload is not in RFC 8785 canonical form")
    if digest != hashlib.sha256(data).hexdigest():
        problems.append("digestSha256 does not match canonicalPayload")
    if key_id != payload.get("keyId"):
        problems.append("keyId differs from the signed payload's keyId")
    if signature == UNSIGNED or not signature:
        if not allow_unsigned:
            problems.append("the receipt is unsigned (the service had no signing key)")
    else:
        problems += _check_signature(data, str(signature), key_id, payload, public_key_pem)
    if "receipt" in document:
        problems += _check_response(document, payload)
    return problems, payload


def _check_signature(
    data: bytes, signature: str, key_id: str, payload: Mapping[str, Any], pem: bytes | None
) -> list[str]:
    if pem is None:
        return ["a public key is needed to verify a signed receipt"]
    if payload.get("algorithm") != ALGORITHM:
        return [f"unsupported algorithm {payload.get('algorithm')!r}"]
    key = load_public_key(pem)
    problems = []
    if key_id != _key_id(key):
        problems.append("keyId is not the id of the given public key")
    try:
        key.verify(base64.b64decode(signature, validate=True), data, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        problems.append("the signature does not verify with the given public key")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("receipt", help="JSON file of a response or receipt; - for stdin")
    parser.add_argument("--public-key", type=Path, help="PEM public key of the service")
    parser.add_argument(
        "--allow-unsigned", action="store_true", help="accept an unsigned receipt (digest only)"
    )
    args = parser.parse_args(argv)
    try:
        raw = sys.stdin.read() if args.receipt == "-" else Path(args.receipt).read_text()
        document = json.loads(raw)
        pem = args.public_key.read_bytes() if args.public_key else None
        if pem is not None:
            load_public_key(pem)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not isinstance(document, dict):
        print("error: the input is not a JSON object", file=sys.stderr)
        return 2
    problems, payload = verify_receipt(document, pem, allow_unsigned=args.allow_unsigned)
    if problems:
        for problem in problems:
            print(f"FAIL: {problem}")
        return 1
    print(
        f"OK: erasure receipt verifies (tenant {payload['tenantId']}, audit event "
        f"{payload['auditEventId']}, seq {payload.get('auditSeq')}, "
        f"{payload['totalDeleted']} rows, erased at {payload['erasedAt']})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
