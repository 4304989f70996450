"""The Merkle leaf of one audit row: RFC 8785 canonical JSON of every field it commits to.

A leaf is the JSON object below, serialised with RFC 8785 (JCS); its leaf hash is
SHA-256(0x00 || leaf) (merkle.leaf_hash). Leaf index = seq - 1 in the tenant's tree.

    leafVersion      1
    tenantId         the tenant whose tree it is in (also the origin's last segment)
    seq              position in the tenant's log, from 1
    id               row UUID (lowercase, hyphenated)
    action           e.g. "gdpr_erasure"
    entityType       e.g. "customer"
    entityId         the entity id, or null when the id is personal data
    entityIdDigest   salted digest of a personal entity id, else null
    subjectIdDigest  salted digest of the data subject the row concerns, else null
    actor            who acted (never a customer)
    changes          non-personal details (JSON object)
    personalDigests  {key: salted digest} of the personal values of the row
    timestamp        append time, "YYYY-MM-DDTHH:MM:SS.ffffffZ" (UTC, microseconds)

Personal values (a personal entity id, the subject id, personal change values)
enter only through salted digests, sha256(salt || JCS(value)) in lowercase hex,
the construction of the server's audit chain. Redaction deletes values and salts
but never a digest, so it never changes a leaf and every proof still verifies,
while a digest alone reveals nothing (the salt is 128 random bits).

Not in the leaf: salts and plaintext personal values (redactable), `redacted_at`
(set by redaction), and the legacy chain's `prev_hash`/`integrity_hash`, which are
functions of the fields above of this and earlier rows; the tree commits to order
and history itself.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import rfc8785

from kaireon_client.jcs import canonical_json
from kaireon_client.tlog.merkle import leaf_hash

__all__ = [
    "LEAF_FIELDS",
    "LEAF_VERSION",
    "AuditLeaf",
    "LeafError",
    "personal_digest",
]

LEAF_VERSION = 1
LEAF_FIELDS = (
    "leafVersion",
    "tenantId",
    "seq",
    "id",
    "action",
    "entityType",
    "entityId",
    "entityIdDigest",
    "subjectIdDigest",
    "actor",
    "changes",
    "personalDigests",
    "timestamp",
)
_DIGEST = re.compile(r"[0-9a-f]{64}")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_TIMESTAMP = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z")


class LeafError(ValueError):
    """A row that cannot be a leaf (missing, unknown or ill-typed field)."""


def personal_digest(salt: str, value: Any) -> str:
    """sha256(salt || JCS(value)), lowercase hex: how a personal value is committed."""
    return hashlib.sha256(salt.encode() + canonical_json(value)).hexdigest()


def _text(value: object, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise LeafError(f"{name} must be a non-empty string")
    return value


def _digest(value: object, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not _DIGEST.fullmatch(value):
        raise LeafError(f"{name} must be null or a lowercase hex SHA-256 digest")
    return value


@dataclass(frozen=True, slots=True)
class AuditLeaf:
    tenant_id: str
    seq: int
    id: str
    action: str
    entity_type: str
    entity_id: str | None
    entity_id_digest: str | None
    subject_id_digest: str | None
    actor: str
    timestamp: str
    changes: Mapping[str, Any] = field(default_factory=dict)
    personal_digests: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Leaves come from JSON: check the types at run time, whatever the annotations say.
        fields: dict[str, object] = {
            "seq": self.seq,
            "id": self.id,
            "entityId": self.entity_id,
            "timestamp": self.timestamp,
            "changes": self.changes,
            "personalDigests": self.personal_digests,
        }
        _text(self.tenant_id, "tenantId")
        seq = fields["seq"]
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
            raise LeafError("seq must be an integer from 1")
        row_id = fields["id"]
        if not isinstance(row_id, str) or not _UUID.fullmatch(row_id):
            raise LeafError("id must be a lowercase hyphenated UUID")
        _text(self.action, "action")
        _text(self.entity_type, "entityType")
        _text(self.actor, "actor")
        _digest(self.entity_id_digest, "entityIdDigest")
        _digest(self.subject_id_digest, "subjectIdDigest")
        if self.entity_id_digest is None:
            if not isinstance(fields["entityId"], str):
                raise LeafError("entityId must be a string unless it is personal (digest)")
        elif self.entity_id is not None:
            raise LeafError("a personal entityId is committed by its digest only: give null")
        stamp = fields["timestamp"]
        if not isinstance(stamp, str) or not _TIMESTAMP.fullmatch(stamp):
            raise LeafError("timestamp must be YYYY-MM-DDTHH:MM:SS.ffffffZ")
        changes = fields["changes"]
        if not isinstance(changes, Mapping) or not all(isinstance(k, str) for k in changes):
            raise LeafError("changes must be a JSON object")
        digests = fields["personalDigests"]
        if not isinstance(digests, Mapping):
            raise LeafError("personalDigests must be a JSON object")
        for key, value in digests.items():
            if not isinstance(key, str) or _digest(value, f"personalDigests[{key!r}]") is None:
                raise LeafError("personalDigests maps names to digests")
        if overlap := set(self.changes) & set(self.personal_digests):
            raise LeafError(f"keys both personal and not: {sorted(overlap)}")

    @property
    def index(self) -> int:
        """The leaf index in the tenant's tree."""
        return self.seq - 1

    def to_json(self) -> dict[str, Any]:
        return {
            "leafVersion": LEAF_VERSION,
            "tenantId": self.tenant_id,
            "seq": self.seq,
            "id": self.id,
            "action": self.action,
            "entityType": self.entity_type,
            "entityId": self.entity_id,
            "entityIdDigest": self.entity_id_digest,
            "subjectIdDigest": self.subject_id_digest,
            "actor": self.actor,
            "changes": dict(self.changes),
            "personalDigests": dict(self.personal_digests),
            "timestamp": self.timestamp,
        }

    def canonical(self) -> bytes:
        """The leaf bytes: RFC 8785 canonical JSON of `to_json()` (the fast encoder:
        the integrator hashes every audit row, and the pure-Python one was a
        tenth of a busy server's CPU)."""
        try:
            return canonical_json(self.to_json())
        except (rfc8785.CanonicalizationError, TypeError, ValueError) as exc:
            raise LeafError(f"row is not canonical JSON: {exc}") from exc

    def leaf_hash(self) -> bytes:
        return leaf_hash(self.canonical())

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> AuditLeaf:
        """From an audit row in the server's normalised (camelCase) form.

        That is the form the audit chain hashes (`tenantId`, `seq`, `id`, `action`,
        `entityType`, `entityId`, `entityIdDigest`, `actor`, `changes`,
        `personalDigests`, `timestamp`) plus `subjectIdDigest`; chain fields
        (`prevHash`, `integrityHash`) are ignored. A personal entity id is dropped
        in favour of its digest, so a redacted and an unredacted row give one leaf."""
        entity_digest = row.get("entityIdDigest") or None
        return cls(
            tenant_id=row["tenantId"],
            seq=int(row["seq"]),
            id=str(row["id"]),
            action=row["action"],
            entity_type=row["entityType"],
            entity_id=None if entity_digest else row.get("entityId"),
            entity_id_digest=entity_digest,
            subject_id_digest=row.get("subjectIdDigest") or None,
            actor=row["actor"],
            timestamp=row["timestamp"],
            changes=dict(row.get("changes") or {}),
            personal_digests=dict(row.get("personalDigests") or {}),
        )

    @classmethod
    def from_json(cls, value: Any) -> AuditLeaf:
        """The inverse of `to_json`: exactly LEAF_FIELDS, nothing missing, nothing more."""
        if not isinstance(value, Mapping):
            raise LeafError("a leaf is a JSON object")
        keys = set(value)
        if missing := set(LEAF_FIELDS) - keys:
            raise LeafError(f"leaf lacks {sorted(missing)}")
        if unknown := keys - set(LEAF_FIELDS):
            raise LeafError(f"leaf has unknown fields {sorted(unknown)}")
        if value["leafVersion"] != LEAF_VERSION or isinstance(value["leafVersion"], bool):
            raise LeafError(f"unsupported leafVersion {value['leafVersion']!r}")
        return cls(
            tenant_id=value["tenantId"],
            seq=value["seq"],
            id=value["id"],
            action=value["action"],
            entity_type=value["entityType"],
            entity_id=value["entityId"],
            entity_id_digest=value["entityIdDigest"],
            subject_id_digest=value["subjectIdDigest"],
            actor=value["actor"],
            timestamp=value["timestamp"],
            changes=value["changes"],
            personal_digests=value["personalDigests"],
        )
