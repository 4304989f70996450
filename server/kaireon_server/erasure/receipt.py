"""The signed erasure receipt: canonical JSON (RFC 8785), its sha256, an ECDSA signature.

The signature is over the canonical payload bytes themselves, so besides
tools/verify_erasure_receipt.py a plain `cosign verify-blob --key pub
--signature sig payload.json` (or openssl) checks it too. The payload binds the
erasure to its audit row (id, seq, integrity hash, time): the chain proves the
row, the signature proves the receipt came from the service's key.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from kaireon_server.erasure.model import Receipt
from kaireon_server.platform.audit_chain import AuditRecord
from kaireon_server.platform.canonical import canonical_json, format_timestamp, sha256_hex
from kaireon_server.platform.signing import ALGORITHM, Signer

RECEIPT_TYPE = "kaireon.erasure.receipt.v1"
UNSIGNED_ALGORITHM = "none"


def receipt_payload(
    *,
    tenant_id: str,
    customer_id: str,
    deleted_counts: Mapping[str, int],
    skipped_tables: Sequence[str],
    audit: AuditRecord,
    key_id: str,
) -> dict[str, Any]:
    return {
        "type": RECEIPT_TYPE,
        "tenantId": tenant_id,
        "customerId": customer_id,
        "deletedCounts": dict(deleted_counts),
        "totalDeleted": sum(deleted_counts.values()),
        "skippedTables": list(skipped_tables),
        "auditEventId": audit.id,
        "auditSeq": audit.seq,
        "auditIntegrityHash": audit.integrity_hash,
        "erasedAt": format_timestamp(audit.created_at),
        # Inside the signed content, so the key and algorithm cannot be swapped.
        "algorithm": ALGORITHM if key_id else UNSIGNED_ALGORITHM,
        "keyId": key_id,
    }


def build_receipt(signer: Signer, payload: Mapping[str, Any]) -> Receipt:
    data = canonical_json(payload)
    return Receipt(
        canonical_payload=data.decode("utf-8"),
        digest_sha256=sha256_hex(data),
        signature=signer.sign(data),
        key_id=signer.key_id,
    )
