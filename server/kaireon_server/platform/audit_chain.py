"""The tamper-evident audit chain: append inside the caller's transaction, verify, redact.

Each row's `integrity_hash` is sha256 over the RFC 8785 canonical JSON of its
content, which includes `prevHash`, the previous row's hash. Appends lock the
tenant's `audit_chain_head` row, so concurrent writers queue instead of forking
the chain; call `append_audit` last in a transaction so that lock is held briefly.

Personal data (a customer id as entity id, personal values in changes) enters
the hash only through a salted digest, sha256(salt || canonical(value)), kept
beside it. An erasure can then delete the values and salts (`redact_subject`)
while every hash still verifies: the redaction model of ledger databases.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg

from kaireon_server.platform.canonical import canonical_json, format_timestamp, sha256_hex

GENESIS_HASH = ""


def personal_digest(salt: str, value: Any) -> str:
    return hashlib.sha256(salt.encode() + canonical_json(value)).hexdigest()


def row_content(row: Mapping[str, Any]) -> dict[str, Any]:
    """The hashed content of a row given in the normalised (camelCase) form."""
    return {
        "tenantId": row["tenantId"],
        "seq": int(row["seq"]),
        "id": str(row["id"]),
        "action": row["action"],
        "entityType": row["entityType"],
        # A personal entity id is committed through its digest only.
        "entityId": None if row.get("entityIdDigest") else row.get("entityId"),
        "entityIdDigest": row.get("entityIdDigest") or None,
        "actor": row["actor"],
        "changes": row.get("changes") or {},
        "personalDigests": row.get("personalDigests") or {},
        "timestamp": row["timestamp"],
        "prevHash": row["prevHash"],
    }


def integrity_hash(row: Mapping[str, Any]) -> str:
    return sha256_hex(canonical_json(row_content(row)))


@dataclass(frozen=True)
class AuditRecord:
    id: str
    seq: int
    prev_hash: str
    integrity_hash: str
    created_at: datetime


@dataclass(frozen=True)
class VerifyResult:
    valid: bool
    rows_checked: int
    first_invalid_seq: int = 0
    first_invalid_id: str = ""
    reason: str = ""
    head_hash: str = ""


@dataclass
class ChainVerifier:
    """Feeds rows in seq order; stops at the first row that does not verify."""

    expected_head: tuple[int, str] | None = None
    rows_checked: int = 0
    _prev_hash: str = GENESIS_HASH
    _next_seq: int = 1
    failure: VerifyResult | None = field(default=None)

    def feed(self, row: Mapping[str, Any], *, plaintext_ok: bool = True) -> bool:
        if self.failure is not None:
            return False
        seq = int(row["seq"])
        row_id = str(row["id"])
        if seq != self._next_seq:
            # A deleted row shows as a gap at the missing position; a moved row
            # shows as a gap too, or as a broken link below.
            self._fail(self._next_seq, "" if seq > self._next_seq else row_id, "sequence_gap")
            return False
        if row["prevHash"] != self._prev_hash:
            self._fail(seq, row_id, "prev_hash_mismatch")
            return False
        if integrity_hash(row) != row["integrityHash"] or not plaintext_ok:
            self._fail(seq, row_id, "integrity_hash_mismatch")
            return False
        self.rows_checked += 1
        self._prev_hash = row["integrityHash"]
        self._next_seq = seq + 1
        return True

    def _fail(self, seq: int, row_id: str, reason: str) -> None:
        self.failure = VerifyResult(False, self.rows_checked, seq, row_id, reason, self._prev_hash)

    def result(self) -> VerifyResult:
        if self.failure is not None:
            return self.failure
        if self.expected_head is not None:
            head_seq, head_hash = self.expected_head
            if head_seq != self._next_seq - 1 or head_hash != self._prev_hash:
                # Rows after the last one we saw were deleted (the head remembers them).
                return VerifyResult(
                    False, self.rows_checked, self._next_seq, "", "sequence_gap", self._prev_hash
                )
        return VerifyResult(True, self.rows_checked, head_hash=self._prev_hash)


def verify_rows(
    rows: Iterable[Mapping[str, Any]], expected_head: tuple[int, str] | None = None
) -> VerifyResult:
    """Verify normalised rows (sorted by seq) of one tenant; pure, used offline too."""
    verifier = ChainVerifier(expected_head=expected_head)
    for row in rows:
        if not verifier.feed(row):
            break
    return verifier.result()


# --- database side -------------------------------------------------------------

_COLUMNS = (
    "tenant_id, seq, id, action, entity_type, entity_id, entity_id_digest, entity_id_salt, "
    "actor, changes, personal, personal_salts, personal_digests, prev_hash, integrity_hash, "
    "created_at, redacted_at"
)


def normalise_db_row(rec: Mapping[str, Any]) -> dict[str, Any]:
    """A database row in the normalised form `row_content` reads."""
    return {
        "tenantId": rec["tenant_id"],
        "seq": rec["seq"],
        "id": str(rec["id"]),
        "action": rec["action"],
        "entityType": rec["entity_type"],
        "entityId": rec["entity_id"],
        "entityIdDigest": rec["entity_id_digest"],
        "actor": rec["actor"],
        "changes": rec["changes"] or {},
        "personalDigests": rec["personal_digests"] or {},
        "timestamp": format_timestamp(rec["created_at"]),
        "prevHash": rec["prev_hash"],
        "integrityHash": rec["integrity_hash"],
    }


def plaintext_matches(rec: Mapping[str, Any]) -> bool:
    """Unredacted personal values still match their committed digests."""
    entity_id, digest = rec["entity_id"], rec["entity_id_digest"]
    if (
        digest
        and entity_id is not None
        and personal_digest(rec["entity_id_salt"] or "", entity_id) != digest
    ):
        return False
    personal = rec["personal"] or {}
    salts = rec["personal_salts"] or {}
    digests = rec["personal_digests"] or {}
    if set(personal) - set(digests):
        return False
    return all(personal_digest(salts.get(k, ""), v) == digests[k] for k, v in personal.items())


async def append_audit(
    con: asyncpg.Connection,
    tenant_id: str,
    *,
    action: str,
    entity_type: str,
    entity_id: str,
    actor: str,
    changes: Mapping[str, Any] | None = None,
    personal: Mapping[str, Any] | None = None,
    entity_id_is_personal: bool = False,
    subject_id: str | None = None,
    now: datetime | None = None,
) -> AuditRecord:
    """Append one row to the tenant's chain inside the caller's transaction.

    `changes` must hold no personal data; put personal values in `personal`.
    `subject_id` names the data subject the row concerns (redaction looks it up).
    """
    if not con.is_in_transaction():
        raise RuntimeError("append_audit must run inside the caller's transaction")
    changes = dict(changes or {})
    personal = dict(personal or {})
    if overlap := set(changes) & set(personal):
        raise ValueError(f"keys both personal and not: {sorted(overlap)}")
    await con.execute(
        "INSERT INTO audit_chain_head (tenant_id, seq, head_hash) VALUES ($1, 0, $2) "
        "ON CONFLICT (tenant_id) DO NOTHING",
        tenant_id,
        GENESIS_HASH,
    )
    head = await con.fetchrow(
        "SELECT seq, head_hash FROM audit_chain_head WHERE tenant_id = $1 FOR UPDATE", tenant_id
    )
    assert head is not None
    seq = int(head["seq"]) + 1
    prev_hash = str(head["head_hash"])
    row_id = str(uuid.uuid4())
    created_at = now or datetime.now(UTC)

    entity_salt = secrets.token_hex(16) if entity_id_is_personal else None
    entity_digest = personal_digest(entity_salt, entity_id) if entity_salt else None
    salts = {k: secrets.token_hex(16) for k in personal}
    digests = {k: personal_digest(salts[k], v) for k, v in personal.items()}
    row = {
        "tenantId": tenant_id,
        "seq": seq,
        "id": row_id,
        "action": action,
        "entityType": entity_type,
        "entityId": entity_id,
        "entityIdDigest": entity_digest,
        "actor": actor,
        "changes": changes,
        "personalDigests": digests,
        "timestamp": format_timestamp(created_at),
        "prevHash": prev_hash,
    }
    digest = integrity_hash(row)
    await con.execute(
        """
        INSERT INTO audit_log (tenant_id, seq, id, action, entity_type, entity_id,
            entity_id_digest, entity_id_salt, actor, changes, personal, personal_salts,
            personal_digests, prev_hash, integrity_hash, created_at, subject_id)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)
        """,
        tenant_id,
        seq,
        uuid.UUID(row_id),
        action,
        entity_type,
        entity_id,
        entity_digest,
        entity_salt,
        actor,
        changes,
        personal or None,
        salts or None,
        digests,
        prev_hash,
        digest,
        created_at,
        subject_id,
    )
    await con.execute(
        "UPDATE audit_chain_head SET seq = $2, head_hash = $3 WHERE tenant_id = $1",
        tenant_id,
        seq,
        digest,
    )
    return AuditRecord(row_id, seq, prev_hash, digest, created_at)


async def redact_subject(
    con: asyncpg.Connection, tenant_id: str, subject_id: str, *, keep_ids: Iterable[str] = ()
) -> int:
    """Delete the personal values (and salts) of every row about `subject_id`.

    Hashed content is untouched, so the chain still verifies. Returns rows redacted.
    """
    keep = [uuid.UUID(i) for i in keep_ids]
    result = await con.execute(
        """
        UPDATE audit_log
           SET entity_id = CASE WHEN entity_id_digest IS NULL THEN entity_id END,
               entity_id_salt = NULL, personal = NULL, personal_salts = NULL,
               subject_id = NULL, redacted_at = now()
         WHERE tenant_id = $1 AND subject_id = $2 AND NOT (id = ANY($3::uuid[]))
        """,
        tenant_id,
        subject_id,
        keep,
    )
    return int(result.split()[-1])


async def verify_tenant_chain(con: asyncpg.Connection, tenant_id: str) -> VerifyResult:
    """Verify the whole chain of a tenant, streaming rows with a server-side cursor.

    Run it inside a (preferably repeatable-read, read-only) transaction."""
    head = await con.fetchrow(
        "SELECT seq, head_hash FROM audit_chain_head WHERE tenant_id = $1", tenant_id
    )
    expected = (int(head["seq"]), str(head["head_hash"])) if head else (0, GENESIS_HASH)
    verifier = ChainVerifier(expected_head=expected)
    cursor = con.cursor(
        f"SELECT {_COLUMNS} FROM audit_log WHERE tenant_id = $1 ORDER BY seq",  # noqa: S608 - constant column list
        tenant_id,
        prefetch=500,
    )
    async for rec in cursor:
        if not verifier.feed(normalise_db_row(rec), plaintext_ok=plaintext_matches(rec)):
            break
    return verifier.result()


def render_changes(rec: Mapping[str, Any]) -> dict[str, Any]:
    """What an API shows as `changes`: plain changes plus unredacted personal values."""
    merged = dict(rec["changes"] or {})
    merged.update(rec["personal"] or {})
    return merged
