"""Regenerate docs/examples/audit/ (the worked example of docs/AUDIT.md):

    .venv/bin/python -m tests.tlog.make_docs_example

A throwaway log key and two witness keys (discarded afterwards: only vkeys are
written) sign a five-entry log of tenant `demo`; the files are an export, one
entry's tlog-proof, and add-checkpoint requests for a witness, one of them forked.
"""

from __future__ import annotations

import json
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from kaireon_client.tlog.cosignature import CosignatureSigner
from kaireon_client.tlog.leaf import AuditLeaf
from kaireon_client.tlog.merkle import inclusion_proof
from kaireon_client.tlog.proof import TlogProof, format_tlog_proof
from tests.tlog.support import Log, add_checkpoint_request

OUT = Path(__file__).resolve().parents[2] / "docs" / "examples" / "audit"


def main() -> None:
    witnesses = [
        CosignatureSigner(f"witness{i}.example/audit", Ed25519PrivateKey.generate()) for i in (1, 2)
    ]
    log = Log(tenant="demo", witnesses=witnesses)
    log.append(5)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "log.vkey").write_text(log.signer.vkey() + "\n")
    for i, w in enumerate(witnesses, 1):
        (OUT / f"witness{i}.vkey").write_text(w.vkey() + "\n")
    (OUT / "export.json").write_text(json.dumps(log.export(), indent=1) + "\n")
    (OUT / "checkpoint").write_text(log.signed())
    path = tuple(inclusion_proof(log.hashes(), 2, 5))
    (OUT / "entry-2.tlog-proof").write_text(format_tlog_proof(TlogProof(2, path, log.signed())))
    (OUT / "entry-2.leaf.json").write_bytes(log.leaves[2].canonical())
    (OUT / "add-checkpoint-3.txt").write_text(add_checkpoint_request(log, 0, 3))
    (OUT / "add-checkpoint-5.txt").write_text(add_checkpoint_request(log, 3, 5))
    # The same log key signs a rewrite of entry 1 (the stolen-key case).
    forked = Log(tenant="demo", log_key=log.log_key, witnesses=witnesses)
    forked.leaves = list(log.leaves)
    forked.leaves[1] = AuditLeaf.from_json({**log.leaves[1].to_json(), "actor": "mallory"})
    forked.append(1)
    (OUT / "add-checkpoint-forked-6.txt").write_text(add_checkpoint_request(forked, 5, 6))


if __name__ == "__main__":
    main()
