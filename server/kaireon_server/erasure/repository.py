"""SQL of erasure and legal holds, via asyncpg.

Every statement filters by tenant_id. Customer ids only ever travel as bind
parameters; table and column names come from the data map or the schema
registry, are checked against an identifier pattern and are always quoted.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from kaireon_server.erasure.model import ACTION_ERASURE, LegalHold
from kaireon_server.platform.db.identifiers import LOWER_IDENTIFIER, quote_ident

# Namespace of the per-customer advisory lock (see lock_subject).
_LOCK_NAMESPACE = "kaireon.erasure.subject"


@dataclass(frozen=True)
class Target:
    """One table erasure deletes from (or counts in, for a dry run)."""

    table: str
    column: str
    count_key: str
    # Compare the subject column as text when it is not a text type (ds_* tables).
    compare_as_text: bool = False

    def _where(self) -> str:
        column = quote_ident(self.column, pattern=LOWER_IDENTIFIER)
        lhs = f"{column}::text" if self.compare_as_text else column
        return f"tenant_id = $1 AND {lhs} = $2"

    def delete_sql(self) -> str:
        table = quote_ident(self.table, pattern=LOWER_IDENTIFIER)
        return f"DELETE FROM {table} WHERE {self._where()}"  # noqa: S608 - quoted identifiers

    def count_sql(self) -> str:
        table = quote_ident(self.table, pattern=LOWER_IDENTIFIER)
        return f"SELECT count(*) FROM {table} WHERE {self._where()}"  # noqa: S608 - quoted identifiers


async def bound_transaction(con: asyncpg.Connection, milliseconds: int) -> None:
    """Bound every statement of this transaction, and its idle gaps, server-side.

    SET LOCAL semantics: both settings end with the transaction. The idle
    timeout ends the session (and so the transaction) if the service stalls
    between statements; the service bounds the whole transaction itself."""
    await con.execute(
        "SELECT set_config('statement_timeout', $1, true), "
        "set_config('idle_in_transaction_session_timeout', $1, true)",
        str(milliseconds),
    )


async def lock_subject(
    con: asyncpg.Connection, tenant_id: str, customer_id: str, *, timeout: float | None = None
) -> None:
    """Serialise erasures and hold changes of one customer until the transaction ends.

    Taken first, before any table, so it cannot join a lock cycle. It makes a
    hold set concurrently with an erasure either visible to it or wait for it,
    and gives two erasures of one customer exact, non-overlapping counts. A
    hash collision between two customers only serialises them."""
    await con.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended($1 || chr(31) || $2 || chr(31) || $3, 0))",
        _LOCK_NAMESPACE,
        tenant_id,
        customer_id,
        timeout=timeout,
    )


async def existing_tables(
    con: asyncpg.Connection, names: Iterable[str], known: set[str]
) -> set[str]:
    """Which of `names` exist (another capability's migrations may not be deployed).

    `known` caches presence for the caller's database, and only presence:
    tables come from migrations and are never dropped, while an absent one may
    arrive with another replica's migrations at any time."""
    wanted = set(names)
    unknown = sorted(wanted - known)
    if unknown:
        rows = await con.fetch(
            "SELECT name FROM unnest($1::text[]) AS t(name) "
            "WHERE to_regclass(quote_ident(name)) IS NOT NULL",
            unknown,
        )
        known.update(str(r["name"]) for r in rows)
    return wanted & known


@dataclass(frozen=True)
class Retained:
    """Rows of the customer in each kept table, and the earlier erasure records."""

    counts: dict[str, int]
    erasure_record_ids: list[str]


def retained_rows_query(
    tables: Sequence[tuple[str, str]], tenant_id: str, customer_id: str
) -> tuple[str, list[Any]]:
    """The statement of `retained_rows`. Every part is an index condition on
    (tenant_id, subject column[, action]) (migration 0112 for the audit parts)."""
    quoted = [
        (quote_ident(t, pattern=LOWER_IDENTIFIER), quote_ident(c, pattern=LOWER_IDENTIFIER))
        for t, c in tables
    ]
    parts = [
        f"(SELECT count(*) FROM {t} WHERE tenant_id = $1 AND {c} = $2) AS {t}"  # noqa: S608 - quoted identifiers
        for t, c in quoted
    ]
    parts.append(
        "(SELECT count(*) FROM audit_log WHERE tenant_id = $1 AND subject_id = $2 "
        "AND action <> $3) AS audit_redactable"
    )
    parts.append(
        "(SELECT coalesce(array_agg(id::text), '{}') FROM audit_log "
        "WHERE tenant_id = $1 AND subject_id = $2 AND action = $3) AS audit_kept"
    )
    return "SELECT " + ", ".join(parts), [tenant_id, customer_id, ACTION_ERASURE]


async def retained_rows(
    con: asyncpg.Connection,
    tables: Sequence[tuple[str, str]],
    tenant_id: str,
    customer_id: str,
) -> Retained:
    """One round trip: row counts of the kept (table, subject column)s and of
    the audit rows an erasure redacts (all about the customer but its earlier
    gdpr_erasure rows, whose ids come back too: the proof of erasure is kept)."""
    sql, args = retained_rows_query(tables, tenant_id, customer_id)
    rec = await con.fetchrow(sql, *args)
    assert rec is not None
    counts = {t: int(rec[t]) for t, _ in tables}
    counts["audit_log"] = int(rec["audit_redactable"])
    return Retained(counts, [str(i) for i in rec["audit_kept"]])


async def delete_rows(
    con: asyncpg.Connection,
    target: Target,
    tenant_id: str,
    customer_id: str,
    *,
    timeout: float | None = None,
) -> int:
    status: str = await con.execute(target.delete_sql(), tenant_id, customer_id, timeout=timeout)
    # Command tag "DELETE <n>".
    return int(status.rsplit(" ", 1)[1])


async def count_rows(
    con: asyncpg.Connection,
    target: Target,
    tenant_id: str,
    customer_id: str,
    *,
    timeout: float | None = None,
) -> int:
    value = await con.fetchval(target.count_sql(), tenant_id, customer_id, timeout=timeout)
    return int(value)


# --- legal holds ---------------------------------------------------------------


def _hold(rec: asyncpg.Record) -> LegalHold:
    return LegalHold(
        customer_id=rec["customer_id"],
        reason=rec["reason"],
        created_by=rec["created_by"],
        created_at=rec["created_at"],
    )


async def get_hold(con: asyncpg.Connection, tenant_id: str, customer_id: str) -> LegalHold | None:
    rec = await con.fetchrow(
        "SELECT customer_id, reason, created_by, created_at FROM legal_hold "
        "WHERE tenant_id = $1 AND customer_id = $2",
        tenant_id,
        customer_id,
    )
    return _hold(rec) if rec else None


async def insert_hold(
    con: asyncpg.Connection, tenant_id: str, customer_id: str, reason: str, created_by: str
) -> LegalHold | None:
    """The new hold, or None when the customer is already held."""
    rec = await con.fetchrow(
        """
        INSERT INTO legal_hold (tenant_id, customer_id, reason, created_by)
        VALUES ($1, $2, $3, $4)
        ON CONFLICT (tenant_id, customer_id) DO NOTHING
        RETURNING customer_id, reason, created_by, created_at
        """,
        tenant_id,
        customer_id,
        reason,
        created_by,
    )
    return _hold(rec) if rec else None


async def delete_hold(
    con: asyncpg.Connection, tenant_id: str, customer_id: str
) -> LegalHold | None:
    rec = await con.fetchrow(
        "DELETE FROM legal_hold WHERE tenant_id = $1 AND customer_id = $2 "
        "RETURNING customer_id, reason, created_by, created_at",
        tenant_id,
        customer_id,
    )
    return _hold(rec) if rec else None


# One page of holds after a customer id: served by the primary key.
LIST_HOLDS_SQL = """
    SELECT customer_id, reason, created_by, created_at FROM legal_hold
     WHERE tenant_id = $1 AND customer_id > $2
     ORDER BY customer_id
     LIMIT $3
"""


async def list_holds(
    con: asyncpg.Connection, tenant_id: str, *, after_customer: str, limit: int
) -> Sequence[LegalHold]:
    rows = await con.fetch(
        LIST_HOLDS_SQL,
        tenant_id,
        after_customer,
        limit,
    )
    return [_hold(r) for r in rows]
