"""Signing the erasure receipt; its format is the client's (kaireon_client/receipt.py).

The signature is over the canonical payload bytes themselves, so besides
`kaireon verify receipt` a plain `cosign verify-blob --key pub --signature sig
payload.json` (or openssl) checks it too. The payload binds the erasure to its
audit row (id, seq, integrity hash, time): the chain proves the row, the
signature proves the receipt came from the service's key.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from kaireon_client.receipt import RECEIPT_TYPE, UNSIGNED_ALGORITHM
from kaireon_client.receipt import receipt_payload as _receipt_payload
from kaireon_server.erasure.model import NotifiedRecipient, Receipt
from kaireon_server.platform.audit_chain import AuditRecord
from kaireon_server.platform.canonical import canonical_json, sha256_hex
from kaireon_server.platform.signing import Signer

__all__ = ["RECEIPT_TYPE", "UNSIGNED_ALGORITHM", "build_receipt", "receipt_payload"]


def receipt_payload(
    *,
    tenant_id: str,
    customer_id: str,
    deleted_counts: Mapping[str, int],
    skipped_tables: Sequence[str],
    audit: AuditRecord,
    key_id: str,
    recipients: Sequence[NotifiedRecipient] = (),
) -> dict[str, Any]:
    return _receipt_payload(
        tenant_id=tenant_id,
        customer_id=customer_id,
        deleted_counts=deleted_counts,
        skipped_tables=skipped_tables,
        audit_event_id=audit.id,
        audit_seq=audit.seq,
        audit_integrity_hash=audit.integrity_hash,
        erased_at=audit.created_at,
        key_id=key_id,
        recipients=[
            {
                "processorId": r.processor_id,
                "name": r.name,
                "eventId": r.event_id,
                "state": "queued",
            }
            for r in recipients
        ],
    )


def build_receipt(signer: Signer, payload: Mapping[str, Any]) -> Receipt:
    data = canonical_json(payload)
    return Receipt(
        canonical_payload=data.decode("utf-8"),
        digest_sha256=sha256_hex(data),
        signature=signer.sign(data),
        key_id=signer.key_id,
    )
