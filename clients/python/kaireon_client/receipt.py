"""The signed erasure receipt: its payload, its canonical bytes, and how to check one.

A receipt is `{canonicalPayload, digestSha256, signature, keyId}`: the payload is
RFC 8785 canonical JSON binding the erasure to its `gdpr_erasure` audit row (id,
seq, integrity hash, time); the digest is sha256 of those bytes; the signature is
ECDSA P-256 SHA-256 over the same bytes (so `openssl dgst -verify` checks it too).
The server builds payloads with `receipt_payload`; `verify_receipt` checks one
offline with a public key pinned by the operator, never one from the receipt.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from kaireon_client import strict_json
from kaireon_client.canonical import canonical_json, format_timestamp, sha256_hex
from kaireon_client.signing import ALGORITHM, UNSIGNED, load_public_key, public_key_id

__all__ = [
    "RECEIPT_TYPE",
    "UNSIGNED_ALGORITHM",
    "Problem",
    "ReceiptReport",
    "receipt_payload",
    "verify_receipt",
]

RECEIPT_TYPE = "kaireon.erasure.receipt.v1"
UNSIGNED_ALGORITHM = "none"

# What failed: the digest, the signature (or key), or the content itself.
ProblemKind = Literal["digest", "signature", "content"]


def receipt_payload(
    *,
    tenant_id: str,
    customer_id: str,
    deleted_counts: Mapping[str, int],
    skipped_tables: Sequence[str],
    audit_event_id: str,
    audit_seq: int,
    audit_integrity_hash: str,
    erased_at: datetime,
    key_id: str,
    recipients: Sequence[Mapping[str, str]] = (),
) -> dict[str, Any]:
    """The signed content. `recipients`: the processors the erasure was passed on
    to (GDPR Art. 19), each {processorId, name, eventId, state} with state
    "queued" (delivery comes later: the request's status follows it); absent
    when there are none, so such a receipt is what it was before the field."""
    payload = {
        "type": RECEIPT_TYPE,
        "tenantId": tenant_id,
        "customerId": customer_id,
        "deletedCounts": dict(deleted_counts),
        "totalDeleted": sum(deleted_counts.values()),
        "skippedTables": list(skipped_tables),
        "auditEventId": audit_event_id,
        "auditSeq": audit_seq,
        "auditIntegrityHash": audit_integrity_hash,
        "erasedAt": format_timestamp(erased_at),
        # Inside the signed content, so the key and algorithm cannot be swapped.
        "algorithm": ALGORITHM if key_id else UNSIGNED_ALGORITHM,
        "keyId": key_id,
    }
    if recipients:
        payload["recipients"] = [dict(r) for r in recipients]
    return payload


RECIPIENT_FIELDS = ("processorId", "name", "eventId", "state")
RECIPIENT_STATES = ("queued",)


def _recipient_problems(value: Any) -> list[str]:
    """The shape of `recipients` when present (a receipt without it is fine)."""
    if not isinstance(value, list) or not value:
        return ["payload recipients is not a non-empty list"]
    for item in value:
        if not isinstance(item, dict) or sorted(item) != sorted(RECIPIENT_FIELDS):
            return [f"a payload recipient is not an object of {', '.join(RECIPIENT_FIELDS)}"]
        if not all(isinstance(item[k], str) and item[k] for k in RECIPIENT_FIELDS):
            return ["a payload recipient has an empty or non-text field"]
        if item["state"] not in RECIPIENT_STATES:
            return [f"a payload recipient's state is not one of {', '.join(RECIPIENT_STATES)}"]
    if len({item["eventId"] for item in value}) != len(value):
        return ["payload recipients repeat an eventId"]
    return []


@dataclass(frozen=True)
class Problem:
    kind: ProblemKind
    message: str


@dataclass(frozen=True)
class ReceiptReport:
    """Every problem found (none: the receipt verifies) and the decoded payload."""

    problems: tuple[Problem, ...]
    payload: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def messages(self) -> list[str]:
        return [p.message for p in self.problems]

    def failed(self, kind: ProblemKind) -> bool:
        return any(p.kind == kind for p in self.problems)


def _field(doc: Mapping[str, Any], camel: str, snake: str) -> Any:
    return doc[camel] if camel in doc else doc.get(snake)


def _counts(value: Any) -> dict[str, int]:
    # protojson may print int64 as strings; the receipt holds numbers.
    if not isinstance(value, Mapping):
        return {}
    return {str(k): int(v) for k, v in value.items()}


def _response_problems(response: Mapping[str, Any], payload: Mapping[str, Any]) -> list[str]:
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


def _payload_problems(payload: Mapping[str, Any]) -> list[str]:
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
    if "recipients" in payload:
        problems += _recipient_problems(payload["recipients"])
    return problems


def _signature_problems(
    data: bytes, signature: str, key_id: str, payload: Mapping[str, Any], pem: bytes | None
) -> list[str]:
    if pem is None:
        return ["a public key is needed to verify a signed receipt"]
    if payload.get("algorithm") != ALGORITHM:
        return [f"unsupported algorithm {payload.get('algorithm')!r}"]
    key = load_public_key(pem)
    problems = []
    if key_id != public_key_id(key):
        problems.append("keyId is not the id of the given public key")
    try:
        key.verify(base64.b64decode(signature, validate=True), data, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError, binascii.Error):
        problems.append("the signature does not verify with the given public key")
    return problems


def verify_receipt(
    document: Mapping[str, Any], public_key_pem: bytes | None, *, allow_unsigned: bool = False
) -> ReceiptReport:
    """Check a receipt, or a whole EraseCustomerResponse (camelCase or snake_case JSON).

    Given a whole response, its customerId, deletedCounts, totalDeleted and
    skippedTables must also equal the signed payload's."""
    receipt = document.get("receipt", document)
    if not isinstance(receipt, Mapping):
        return ReceiptReport((Problem("content", "no receipt in the document"),))
    text = _field(receipt, "canonicalPayload", "canonical_payload")
    if not isinstance(text, str) or not text:
        return ReceiptReport((Problem("content", "the receipt has no canonicalPayload"),))
    data = text.encode("utf-8")
    try:
        payload = strict_json.loads(data)
    except ValueError:
        return ReceiptReport((Problem("content", "canonicalPayload is not JSON"),))
    if not isinstance(payload, dict):
        return ReceiptReport((Problem("content", "canonicalPayload is not a JSON object"),))
    problems = [Problem("content", m) for m in _payload_problems(payload)]
    if canonical_json(payload) != data:
        problems.append(Problem("content", "canonicalPayload is not in RFC 8785 canonical form"))
    if _field(receipt, "digestSha256", "digest_sha256") != sha256_hex(data):
        problems.append(Problem("digest", "digestSha256 does not match canonicalPayload"))
    key_id = _field(receipt, "keyId", "key_id") or ""
    if key_id != payload.get("keyId"):
        problems.append(Problem("signature", "keyId differs from the signed payload's keyId"))
    signature = _field(receipt, "signature", "signature")
    if signature == UNSIGNED or not signature:
        if not allow_unsigned:
            problems.append(
                Problem("signature", "the receipt is unsigned (the service had no signing key)")
            )
    else:
        problems += [
            Problem("signature", m)
            for m in _signature_problems(data, str(signature), key_id, payload, public_key_pem)
        ]
    if "receipt" in document:
        problems += [Problem("content", m) for m in _response_problems(document, payload)]
    return ReceiptReport(tuple(problems), payload)
