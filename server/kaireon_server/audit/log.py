"""Reading the tenant's audit chain: pages of events, and verification.

Domain code: the rows become `AuditEvent` dataclasses here; audit/service.py
turns those into protobuf. Appending is platform/audit_chain.py's
`append_audit`, called by whichever use case changes something.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kaireon_server.audit import repository
from kaireon_server.platform.audit_chain import VerifyResult, render_changes, verify_tenant_chain
from kaireon_server.platform.db import Database
from kaireon_server.platform.errors import InvalidArgument
from kaireon_server.platform.paging import decode_token, encode_token


@dataclass(frozen=True)
class AuditEvent:
    """One audit row as the API shows it (personal values unless redacted)."""

    id: str
    seq: int
    action: str
    entity_type: str
    entity_id: str
    entity_id_digest: str
    actor: str
    changes: dict[str, Any]
    personal_digests: dict[str, str]
    prev_hash: str
    integrity_hash: str
    created_at: datetime
    redacted: bool

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> AuditEvent:
        return cls(
            id=str(row["id"]),
            seq=row["seq"],
            action=row["action"],
            entity_type=row["entity_type"],
            entity_id=row["entity_id"] or "",
            entity_id_digest=row["entity_id_digest"] or "",
            actor=row["actor"],
            changes=render_changes(row),
            personal_digests=row["personal_digests"] or {},
            prev_hash=row["prev_hash"],
            integrity_hash=row["integrity_hash"],
            created_at=row["created_at"],
            redacted=row["redacted_at"] is not None,
        )


async def list_events(
    db: Database,
    *,
    tenant_id: str,
    limit: int,
    page_token: str,
    action: str,
    entity_type: str,
) -> tuple[list[AuditEvent], str]:
    """One page in chain order and the next page's token ("" after the last)."""
    after = decode_token(page_token).get("seq", 0)
    if not isinstance(after, int) or after < 0:
        raise InvalidArgument.field("page_token", "malformed page token")
    async with db.transaction(tenant_id, readonly=True) as con:
        rows = await repository.list_events(
            con,
            tenant_id,
            after_seq=after,
            limit=limit + 1,
            action=action or None,
            entity_type=entity_type or None,
        )
    page, more = [AuditEvent.from_row(r) for r in rows[:limit]], len(rows) > limit
    return page, encode_token({"seq": page[-1].seq}) if more else ""


async def verify_chain(db: Database, *, tenant_id: str) -> VerifyResult:
    """Verify the tenant's whole chain in one consistent snapshot (offline tools, tests;
    the RPC resumes instead: tlog.verify_chain_incremental)."""
    async with db.transaction(tenant_id, readonly=True, isolation="repeatable_read") as con:
        return await verify_tenant_chain(con, tenant_id)
