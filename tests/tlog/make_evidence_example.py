"""Regenerate docs/examples/evidence/ (docs/AUDIT.md, "Evidence carries proofs"):

    .venv/bin/python -m tests.tlog.make_evidence_example

A throwaway log key and one witness key (discarded: only vkeys are written) sign
a four-entry log of tenant `demo` whose third row is an erasure and whose fourth
is a DSAR export's completion. Written: the erasure receipt as EraseCustomer
answers it (`receipt.json`: the EraseCustomer answer, its receipt unsigned by
the service, with its evidence proof beside the payload), the export bytes (`export.json`) and their evidence
proof (`export.tlog-proof`), both against the cosigned checkpoint of size 4.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from kaireon_client.tlog.cosignature import CosignatureSigner
from kaireon_client.tlog.merkle import inclusion_proof
from kaireon_client.tlog.proof import TlogProof, format_tlog_proof
from tests.tlog.support import Log, make_leaf

OUT = Path(__file__).resolve().parents[2] / "docs" / "examples" / "evidence"
REQUEST_ID = "5b0c3f4e-8d1a-4b7e-9c2d-0e6f1a2b3c4d"


def main() -> None:
    witness = CosignatureSigner("witness1.example/audit", Ed25519PrivateKey.generate())
    log = Log(tenant="demo", witnesses=[witness])
    log.append(2)
    counts = {"decisionTrace": 2, "interactionHistory": 5}
    erasure = make_leaf(
        "demo",
        3,
        action="gdpr_erasure",
        entity_id="cust_00042",
        entity_id_digest=None,
        actor="operator@example.com",
        changes=counts,
        personal_digests={},
    )
    export = rfc8785.dumps(
        {
            "counts": {},
            "customerId": "cust_00007",
            "data": {},
            "encrypted": False,
            "exportedAt": "2026-12-04T10:00:04.000000Z",
            "requestId": REQUEST_ID,
        }
    )
    completion = make_leaf(
        "demo",
        4,
        action="dsar_export_completed",
        entity_type="dsar_request",
        entity_id=REQUEST_ID,
        entity_id_digest=None,
        actor="system:dsar-worker",
        changes={
            "attempt": 1,
            "digestSha256": hashlib.sha256(export).hexdigest(),
            "encrypted": False,
            "keyVersion": None,
            "rows": 0,
            "sizeBytes": len(export),
        },
        personal_digests={},
    )
    log.leaves += [erasure, completion]
    payload: dict[str, Any] = {
        "type": "kaireon.erasure.receipt.v1",
        "tenantId": "demo",
        "customerId": "cust_00042",
        "deletedCounts": counts,
        "totalDeleted": sum(counts.values()),
        "skippedTables": [],
        "auditEventId": erasure.id,
        "auditSeq": erasure.seq,
        "auditIntegrityHash": "0" * 64,
        "erasedAt": erasure.timestamp,
        "algorithm": "none",
        "keyId": "",
    }
    canonical = rfc8785.dumps(payload)

    def proof(index: int) -> str:
        path = tuple(inclusion_proof(log.hashes(), index, 4))
        leaf = log.leaves[index].canonical()
        return format_tlog_proof(TlogProof(index, path, log.signed(4), leaf))

    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "log.vkey").write_text(log.signer.vkey() + "\n")
    (OUT / "witness1.vkey").write_text(witness.vkey() + "\n")
    receipt = {
        "canonicalPayload": canonical.decode(),
        "digestSha256": hashlib.sha256(canonical).hexdigest(),
        "signature": "unsigned",
        "keyId": "",
        "tlogProof": proof(2),
    }
    response = {
        "success": True,
        "customerId": "cust_00042",
        "deletedCounts": counts,
        "totalDeleted": sum(counts.values()),
        "skippedTables": [],
        "receipt": receipt,
    }
    (OUT / "receipt.json").write_text(json.dumps(response, indent=1) + "\n")
    (OUT / "export.json").write_bytes(export)
    (OUT / "export.tlog-proof").write_text(proof(3))


if __name__ == "__main__":
    main()
