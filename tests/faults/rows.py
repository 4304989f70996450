"""What the database holds about one customer, read over the owner's own
connection (never the server's pool, which row-level security scopes)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import asyncpg

from kaireon_server.platform import data_map
from kaireon_server.platform.data_map import ErasureAction


@dataclass(frozen=True)
class CustomerState:
    deleted: dict[str, int]  # rows per table erasure deletes (ds_* tables included)
    kept: dict[str, int]  # rows per table erasure keeps
    # audit rows about the customer (and rows once about them): id -> redacted
    audit: dict[str, bool]
    erasure_records: int  # gdpr_erasure rows naming the customer

    @property
    def total_deleted(self) -> int:
        return sum(self.deleted.values())


class CustomerTables:
    """Every (table, subject column) holding customers' rows for one tenant."""

    def __init__(self, deleted: list[tuple[str, str]], kept: list[tuple[str, str]]) -> None:
        self.deleted = deleted
        self.kept = kept

    @classmethod
    async def load(cls, con: asyncpg.Connection, tenant: str) -> CustomerTables:
        present = {
            r["name"]
            for r in await con.fetch(
                "SELECT name FROM unnest($1::text[]) name WHERE to_regclass(name) IS NOT NULL",
                [t.table for t in data_map.TABLES],
            )
        }
        deleted = [
            (t.table, t.subject_column)
            for t in data_map.TABLES
            if t.table in present and t.erasure is ErasureAction.DELETE
        ]
        kept = [
            (t.table, t.subject_column)
            for t in data_map.TABLES
            if t.table in present and t.erasure is ErasureAction.RETAIN
        ]
        for rec in await con.fetch(
            "SELECT table_name FROM information_schema.columns "
            "WHERE table_name LIKE $1 AND column_name = 'customer_id' ORDER BY 1",
            f"ds\\_{tenant}\\_%",
        ):
            deleted.append((rec["table_name"], "customer_id"))
        return cls(deleted, kept)

    async def state(
        self,
        con: asyncpg.Connection,
        tenant: str,
        customer: str,
        earlier: CustomerState | None = None,
    ) -> CustomerState:
        """One snapshot (one statement) of everything about the customer; with
        `earlier`, the audit rows about them then too (redaction clears subject_id)."""
        parts = [
            f'(SELECT count(*) FROM "{t}" WHERE tenant_id = $1 AND "{c}"::text = $2) AS "{t}"'
            for t, c in [*self.deleted, *self.kept]
        ]
        parts += [
            "(SELECT coalesce(jsonb_object_agg(id::text, redacted_at IS NOT NULL), '{}') "
            "FROM audit_log WHERE tenant_id = $1 AND action <> 'gdpr_erasure' "
            "AND (subject_id = $2 OR id::text = ANY($3::text[]))) AS a_rows",
            "(SELECT count(*) FROM audit_log WHERE tenant_id = $1 AND entity_id = $2 "
            "AND action = 'gdpr_erasure') AS a_erasures",
        ]
        ids = list(earlier.audit) if earlier else []
        rec = await con.fetchrow("SELECT " + ", ".join(parts), tenant, customer, ids)
        assert rec is not None
        audit = rec["a_rows"]
        if isinstance(audit, str):  # a connection without the server's jsonb codec
            audit = json.loads(audit)
        return CustomerState(
            deleted={t: int(rec[t]) for t, _ in self.deleted},
            kept={t: int(rec[t]) for t, _ in self.kept},
            audit={str(k): bool(v) for k, v in audit.items()},
            erasure_records=int(rec["a_erasures"]),
        )


def classify(before: CustomerState, after: CustomerState, erasures: int = 1) -> str:
    """ "untouched", "erased" (by `erasures` committed erasures) or "PARTIAL"
    (anything else: the property is broken)."""
    if after == before:
        return "untouched"
    # Each committed erasure also records its (completed, direct) lifecycle request.
    kept = dict(before.kept)
    if "subject_request" in kept:
        kept["subject_request"] += erasures
    erased = (
        after.total_deleted == 0
        and after.kept == kept
        and after.erasure_records == before.erasure_records + erasures
        # every earlier row about the customer redacted (erasure records are kept)
        and set(after.audit) == set(before.audit)
        and all(after.audit.values())
    )
    return "erased" if erased else "PARTIAL"
