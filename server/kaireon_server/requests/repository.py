"""SQL of data-subject requests and their policies, via asyncpg.

Every statement filters by tenant_id. Each list filter combination is its own
statement over its own index (tests/platform/test_generic_plans.py), so a
generic plan never walks the table.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

import asyncpg

from kaireon_server.requests.deadlines import Policy
from kaireon_server.requests.model import RUNNING, State, SubjectRequest

COLUMNS = """tenant_id, id, kind, subject_id, regulation, state, origin, received_at, due_date,
    extension_months, extension_days, paused_days, paused_at, paused_from,
    verification_method, verification_reference, dsar_request_id, created_by, updated_at"""

_RUNNING_SQL = ", ".join(f"'{s.value}'" for s in sorted(RUNNING))


def _record(row: asyncpg.Record) -> SubjectRequest:
    return SubjectRequest(
        tenant_id=row["tenant_id"],
        id=row["id"],
        kind=row["kind"],
        subject_id=row["subject_id"],
        regulation=row["regulation"],
        state=State(row["state"]),
        origin=row["origin"],
        received_at=row["received_at"],
        due_date=row["due_date"],
        extension_months=row["extension_months"],
        extension_days=row["extension_days"],
        paused_days=row["paused_days"],
        paused_at=row["paused_at"],
        paused_from=State(row["paused_from"]) if row["paused_from"] else None,
        verification_method=row["verification_method"],
        verification_reference=row["verification_reference"],
        dsar_request_id=row["dsar_request_id"],
        created_by=row["created_by"],
        updated_at=row["updated_at"],
    )


async def insert(
    con: asyncpg.Connection,
    *,
    tenant_id: str,
    kind: str,
    subject_id: str,
    regulation: str,
    state: State,
    origin: str,
    received_at: datetime,
    due: date,
    created_by: str,
    dsar_request_id: uuid.UUID | None = None,
) -> SubjectRequest:
    row = await con.fetchrow(
        f"""INSERT INTO subject_request (tenant_id, kind, subject_id, regulation, state, origin,
               received_at, due_date, created_by, dsar_request_id)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
           RETURNING {COLUMNS}""",  # noqa: S608 - constant column list
        tenant_id,
        kind,
        subject_id,
        regulation,
        state.value,
        origin,
        received_at,
        due,
        created_by,
        dsar_request_id,
    )
    assert row is not None
    return _record(row)


async def get(
    con: asyncpg.Connection, tenant_id: str, request_id: uuid.UUID, *, lock: bool = False
) -> SubjectRequest | None:
    suffix = " FOR UPDATE" if lock else ""
    row = await con.fetchrow(
        f"SELECT {COLUMNS} FROM subject_request WHERE tenant_id = $1 AND id = $2{suffix}",  # noqa: S608
        tenant_id,
        request_id,
    )
    return _record(row) if row is not None else None


# The columns a transition may change (a closed set: names are never caller input).
_UPDATABLE = frozenset(
    {
        "state",
        "due_date",
        "extension_months",
        "extension_days",
        "paused_days",
        "paused_at",
        "paused_from",
        "verification_method",
        "verification_reference",
        "verified_at",
        "dsar_request_id",
    }
)


async def update(
    con: asyncpg.Connection, tenant_id: str, request_id: uuid.UUID, **changes: Any
) -> SubjectRequest:
    unknown = set(changes) - _UPDATABLE
    if unknown:
        raise ValueError(f"not updatable: {sorted(unknown)}")
    names = sorted(changes)
    sets = ", ".join(f"{name} = ${i}" for i, name in enumerate(names, start=3))
    row = await con.fetchrow(
        f"UPDATE subject_request SET {sets}, updated_at = now() "  # noqa: S608 - names from _UPDATABLE
        f"WHERE tenant_id = $1 AND id = $2 RETURNING {COLUMNS}",
        tenant_id,
        request_id,
        *(changes[n] for n in names),
    )
    assert row is not None
    return _record(row)


def list_query(
    tenant_id: str,
    *,
    state: State | None,
    due_before: date | None,
    after: tuple[Any, uuid.UUID] | None,
    limit: int,
) -> tuple[str, list[Any]]:
    """One statement per combination of filters, each served by an index of
    migration 0150: newest first, or by due date when a due filter is given
    (then only requests whose clock runs, unless a state is named)."""
    args: list[Any] = [tenant_id]
    where = ["tenant_id = $1"]
    if state is not None:
        args.append(state.value)
        where.append(f"state = ${len(args)}")
    if due_before is not None:
        args.append(due_before)
        where.append(f"due_date < ${len(args)}")
        if state is None:
            where.append(f"state IN ({_RUNNING_SQL})")
        order = "due_date, id"
        if after is not None:
            args.extend(after)
            where.append(f"(due_date, id) > (${len(args) - 1}, ${len(args)})")
    else:
        order = "received_at DESC, id DESC"
        if after is not None:
            args.extend(after)
            where.append(f"(received_at, id) < (${len(args) - 1}, ${len(args)})")
    args.append(limit)
    sql = (
        f"SELECT {COLUMNS} FROM subject_request WHERE {' AND '.join(where)} "  # noqa: S608 - fixed fragments
        f"ORDER BY {order} LIMIT ${len(args)}"
    )
    return sql, args


async def list_requests(
    con: asyncpg.Connection, sql: str, args: Sequence[Any]
) -> list[SubjectRequest]:
    return [_record(r) for r in await con.fetch(sql, *args)]


async def get_policy(con: asyncpg.Connection, tenant_id: str, regulation: str) -> Policy | None:
    row = await con.fetchrow(
        "SELECT regulation, period_months, period_days, max_extension_months, "
        "max_extension_days, require_verification FROM subject_request_policy "
        "WHERE tenant_id = $1 AND regulation = $2",
        tenant_id,
        regulation,
    )
    return _policy(row) if row is not None else None


async def list_policies(con: asyncpg.Connection, tenant_id: str) -> list[Policy]:
    rows = await con.fetch(
        "SELECT regulation, period_months, period_days, max_extension_months, "
        "max_extension_days, require_verification FROM subject_request_policy "
        "WHERE tenant_id = $1",
        tenant_id,
    )
    return [_policy(r) for r in rows]


def _policy(row: asyncpg.Record) -> Policy:
    return Policy(
        regulation=row["regulation"],
        period_months=row["period_months"],
        period_days=row["period_days"],
        max_extension_months=row["max_extension_months"],
        max_extension_days=row["max_extension_days"],
        require_verification=row["require_verification"],
        legal_reference="",
        overridden=True,
    )


async def upsert_policy(
    con: asyncpg.Connection, tenant_id: str, policy: Policy, actor: str
) -> None:
    await con.execute(
        """INSERT INTO subject_request_policy (tenant_id, regulation, period_months, period_days,
               max_extension_months, max_extension_days, require_verification, updated_by)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
           ON CONFLICT (tenant_id, regulation) DO UPDATE SET
               period_months = EXCLUDED.period_months, period_days = EXCLUDED.period_days,
               max_extension_months = EXCLUDED.max_extension_months,
               max_extension_days = EXCLUDED.max_extension_days,
               require_verification = EXCLUDED.require_verification,
               updated_by = EXCLUDED.updated_by, updated_at = now()""",
        tenant_id,
        policy.regulation,
        policy.period_months,
        policy.period_days,
        policy.max_extension_months,
        policy.max_extension_days,
        policy.require_verification,
        actor,
    )
