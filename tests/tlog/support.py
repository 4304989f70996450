"""A small signed log for the tlog tests: rows -> leaves -> tree -> checkpoint -> export."""

from __future__ import annotations

import copy
import secrets
import uuid
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from kaireon_client.tlog.checkpoint import Checkpoint, origin_for_tenant, tenant_log_signer
from kaireon_client.tlog.cosignature import CosignatureSigner
from kaireon_client.tlog.leaf import AuditLeaf, personal_digest
from kaireon_client.tlog.merkle import (
    LeafHashes,
    consistency_proof,
    encode_hash,
    inclusion_proof,
    root_hash,
)
from kaireon_client.tlog.note import Ed25519Signer, Note, format_note, sign_note
from kaireon_client.tlog.verify import EXPORT_FORMAT

LOG_NAME = "kaireon.example"


def make_leaf(tenant: str, seq: int, **overrides: Any) -> AuditLeaf:
    salt = secrets.token_hex(16)
    fields: dict[str, Any] = {
        "tenant_id": tenant,
        "seq": seq,
        "id": str(uuid.uuid4()),
        "action": "consent_changed",
        "entity_type": "customer",
        "entity_id": None,
        "entity_id_digest": personal_digest(salt, f"cust_{seq:03d}"),
        "subject_id_digest": personal_digest(secrets.token_hex(16), f"cust_{seq:03d}"),
        "actor": "operator@example.com",
        "timestamp": f"2026-12-04T10:{seq // 60 % 60:02d}:{seq % 60:02d}.000000Z",
        "changes": {"purpose": "marketing", "granted": seq % 2 == 0},
        "personal_digests": {"email": personal_digest(salt, f"p{seq}@example.com")},
    }
    fields.update(overrides)
    return AuditLeaf(**fields)


@dataclass
class Log:
    tenant: str = "acme"
    log_key: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)
    witnesses: list[CosignatureSigner] = field(
        default_factory=lambda: [
            CosignatureSigner(f"witness{i}.example/w", Ed25519PrivateKey.generate())
            for i in range(3)
        ]
    )
    leaves: list[AuditLeaf] = field(default_factory=list)

    @property
    def origin(self) -> str:
        return origin_for_tenant(LOG_NAME, self.tenant)

    @property
    def signer(self) -> Ed25519Signer:
        return tenant_log_signer(self.log_key, LOG_NAME, self.tenant)

    def append(self, n: int) -> None:
        for _ in range(n):
            self.leaves.append(make_leaf(self.tenant, len(self.leaves) + 1))

    def hashes(self) -> list[bytes]:
        return [leaf.leaf_hash() for leaf in self.leaves]

    def checkpoint(self, size: int | None = None) -> Checkpoint:
        size = len(self.leaves) if size is None else size
        return Checkpoint(self.origin, size, root_hash(self.hashes()[:size]))

    def signed(self, size: int | None = None, cosigners: int = 3) -> str:
        body = self.checkpoint(size).body()
        # The log's signature first, then the witnesses' (as a log serves it).
        note = sign_note(body, [self.signer])
        cosignatures = tuple(w.cosign(body) for w in self.witnesses[:cosigners])
        return format_note(Note(body, note.signatures + cosignatures)).decode()

    def consistency(self, old: int, new: int) -> list[bytes]:
        return consistency_proof(self.hashes(), old, new)

    def export(self, start: int = 0, *, proofs: bool = True) -> dict[str, Any]:
        size = len(self.leaves)
        source = LeafHashes(self.hashes())
        entries = []
        for leaf in self.leaves[start:]:
            entry: dict[str, Any] = {"leaf": leaf.to_json()}
            if proofs:
                path = inclusion_proof(source, leaf.index, size)
                entry["inclusionProof"] = [encode_hash(h) for h in path]
            entries.append(entry)
        return {
            "format": EXPORT_FORMAT,
            "checkpoint": self.signed(),
            "start": start,
            "entries": entries,
        }


def add_checkpoint_request(log: Log, old: int, new: int, *, signed: str | None = None) -> str:
    """A tlog-witness add-checkpoint body: old size, consistency proof, blank line, checkpoint."""
    proof = log.consistency(old, new) if 0 < old < new else []
    lines = "".join(encode_hash(h) + "\n" for h in proof)
    return f"old {old}\n{lines}\n{signed or log.signed(new, cosigners=0)}"


def deep(document: dict[str, Any]) -> dict[str, Any]:
    return copy.deepcopy(document)
