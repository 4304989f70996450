"""The linear audit hash chain: how a row is hashed and how a run of rows is verified.

Each row's `integrityHash` is sha256 over the RFC 8785 canonical JSON of its
content, which includes `prevHash`, the previous row's hash (empty for seq 1).
Personal data (a customer id as entity id, personal values) enters the hash
only through salted digests kept beside it, so an erasure can delete the
values while every hash still verifies.

The one implementation: the server hashes rows it appends with
`integrity_hash`, its VerifyChain (full and incremental) feeds a
`ChainVerifier`, and `kaireon verify audit DUMP` checks a `ListAuditEvents`
dump offline with `verify_rows` after `normalise_event`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kaireon_client.canonical import canonical_json, format_timestamp, parse_timestamp, sha256_hex

# One construction for every salted digest: the chain's, and the leaf's it commits to.
from kaireon_client.tlog.leaf import personal_digest

__all__ = [
    "GENESIS_HASH",
    "ChainVerifier",
    "VerifyResult",
    "events_of",
    "integrity_hash",
    "normalise_event",
    "personal_digest",
    "row_content",
    "verify_rows",
]

GENESIS_HASH = ""


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
class VerifyResult:
    valid: bool
    rows_checked: int
    first_invalid_seq: int = 0
    first_invalid_id: str = ""
    reason: str = ""
    head_hash: str = ""


@dataclass
class ChainVerifier:
    """Feeds rows in seq order; stops at the first row that does not verify.

    `start=(seq, hash)` resumes after row `seq` whose integrity hash is `hash`
    (the default (0, "") is the chain's beginning); `expected_head` is the
    chain head the last row must reach (rows deleted at the tail show there).
    `rows_checked` counts rows fed since `start`.
    """

    start: tuple[int, str] = (0, GENESIS_HASH)
    expected_head: tuple[int, str] | None = None
    rows_checked: int = 0
    failure: VerifyResult | None = field(default=None)

    def __post_init__(self) -> None:
        self._next_seq = self.start[0] + 1
        self._prev_hash = self.start[1]

    @property
    def position(self) -> tuple[int, str]:
        """(seq, integrity hash) of the last row verified (or `start`)."""
        return self._next_seq - 1, self._prev_hash

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
    rows: Iterable[Mapping[str, Any]],
    expected_head: tuple[int, str] | None = None,
    *,
    start: tuple[int, str] = (0, GENESIS_HASH),
) -> VerifyResult:
    """Verify normalised rows (sorted by seq) of one tenant; pure, used offline too."""
    verifier = ChainVerifier(start=start, expected_head=expected_head)
    for row in rows:
        if not verifier.feed(row):
            break
    return verifier.result()


# --- ListAuditEvents JSON (protojson, camelCase) -----------------------------------


def events_of(document: Any) -> list[dict[str, Any]]:
    """The events of a dump: {"events": [...]}, a bare list, or a list of such pages."""
    if isinstance(document, dict):
        events = document.get("events", [])
        if not isinstance(events, list):
            raise ValueError("'events' is not a list")
        return list(events)
    if isinstance(document, list):
        out: list[dict[str, Any]] = []
        for item in document:
            out.extend(events_of(item) if isinstance(item, dict) and "events" in item else [item])
        return out
    raise ValueError("expected {'events': [...]} or a list")


def normalise_event(event: Mapping[str, Any]) -> dict[str, Any]:
    """A ListAuditEvents event in the normalised form `row_content` reads."""
    personal_digests = dict(event.get("personalDigests") or {})
    # Personal values (when not yet redacted) are shown merged into changes;
    # they are committed through their digests, not as plain changes.
    changes = {k: v for k, v in (event.get("changes") or {}).items() if k not in personal_digests}
    return {
        "tenantId": event.get("tenantId", ""),
        "seq": int(event["seq"]),
        "id": event["id"],
        "action": event["action"],
        "entityType": event["entityType"],
        "entityId": event.get("entityId") or None,
        "entityIdDigest": event.get("entityIdDigest") or None,
        "actor": event["actor"],
        "changes": changes,
        "personalDigests": personal_digests,
        "timestamp": format_timestamp(parse_timestamp(event["createTime"])),
        "prevHash": event.get("prevHash", ""),
        "integrityHash": event["integrityHash"],
    }
