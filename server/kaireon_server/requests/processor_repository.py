"""SQL of processors and their erasure-event outbox, via asyncpg (tenant_id in every WHERE)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from kaireon_server.erasure.model import NotifiedRecipient


@dataclass(frozen=True)
class Processor:
    id: uuid.UUID
    name: str
    url: str
    created_at: datetime
    pending: int = 0
    delivered: int = 0
    dead: int = 0
    signing_scheme: str = "hmac"
    events: tuple[str, ...] = ("subject.erased",)


@dataclass(frozen=True)
class DeliveryState:
    """Where one processor's event of an erasure request stands."""

    processor_id: uuid.UUID
    processor_name: str
    state: str  # pending | delivered | dead | waived
    attempts: int
    acknowledged_at: datetime | None
    waive_reason: str


@dataclass(frozen=True)
class Delivery:
    """One claimed outbox row with where and how to send it."""

    tenant_id: str
    id: uuid.UUID
    url: str
    signing_secret: str
    payload: str
    attempts: int


async def insert_processor(
    con: asyncpg.Connection,
    tenant_id: str,
    *,
    name: str,
    url: str,
    secret: str,
    events: Sequence[str],
    actor: str,
) -> Processor | None:
    row = await con.fetchrow(
        "INSERT INTO processor_recipient"
        " (tenant_id, name, url, signing_secret, created_by, events) "
        "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tenant_id, name) DO NOTHING "
        "RETURNING id, name, url, created_at, events, signing_scheme",
        tenant_id,
        name,
        url,
        secret,
        actor,
        list(events),
    )
    if row is None:
        return None
    return Processor(
        row["id"],
        row["name"],
        row["url"],
        row["created_at"],
        signing_scheme=row["signing_scheme"],
        events=tuple(row["events"]),
    )


async def list_processors(con: asyncpg.Connection, tenant_id: str) -> list[Processor]:
    rows = await con.fetch(
        """SELECT p.id, p.name, p.url, p.created_at, p.events, p.signing_scheme,
                  count(*) FILTER (WHERE o.status = 'pending') AS pending,
                  count(*) FILTER (WHERE o.status = 'delivered') AS delivered,
                  count(*) FILTER (WHERE o.status = 'dead') AS dead
             FROM processor_recipient p
             LEFT JOIN processor_outbox o
               ON o.tenant_id = p.tenant_id AND o.recipient_id = p.id
            WHERE p.tenant_id = $1
            GROUP BY p.id, p.name, p.url, p.created_at, p.events, p.signing_scheme
            ORDER BY p.name""",
        tenant_id,
    )
    return [
        Processor(
            r["id"],
            r["name"],
            r["url"],
            r["created_at"],
            r["pending"],
            r["delivered"],
            r["dead"],
            r["signing_scheme"],
            tuple(r["events"]),
        )
        for r in rows
    ]


async def enqueue_for_all(
    con: asyncpg.Connection,
    tenant_id: str,
    event_type: str,
    subject_id: str,
    payload: str,
    *,
    request_id: uuid.UUID | None = None,
) -> list[NotifiedRecipient]:
    """One outbox row per processor of the tenant: the processors, by name, with
    their event's id."""
    rows = await con.fetch(
        "WITH queued AS ("
        " INSERT INTO processor_outbox"
        " (tenant_id, recipient_id, event_type, subject_id, payload, request_id)"
        " SELECT tenant_id, id, $2, $3, $4, $5 FROM processor_recipient"
        " WHERE tenant_id = $1 AND $2 = ANY (events)"
        " RETURNING id, recipient_id)"
        " SELECT q.id, q.recipient_id, p.name FROM queued q"
        " JOIN processor_recipient p ON p.tenant_id = $1 AND p.id = q.recipient_id"
        " ORDER BY p.name, q.recipient_id",
        tenant_id,
        event_type,
        subject_id,
        payload,
        request_id,
    )
    return [NotifiedRecipient(str(r["recipient_id"]), r["name"], str(r["id"])) for r in rows]


async def claim(con: asyncpg.Connection, lease_seconds: float) -> tuple[str, uuid.UUID] | None:
    row = await con.fetchrow("SELECT * FROM kaireon_processor_claim_delivery($1)", lease_seconds)
    return (row["tenant_id"], row["id"]) if row else None


async def next_due_in(con: asyncpg.Connection) -> float | None:
    """Seconds until the next pending delivery of any tenant is due, by the
    database's clock (0 when one is due now); None when none is pending."""
    value = await con.fetchval("SELECT * FROM kaireon_processor_next_due_seconds()")
    return None if value is None else float(value)


async def get_endpoint(
    con: asyncpg.Connection, tenant_id: str, processor_id: uuid.UUID
) -> tuple[str, str] | None:
    """A processor's URL and signing secret (or private key)."""
    row = await con.fetchrow(
        "SELECT url, signing_secret FROM processor_recipient WHERE tenant_id = $1 AND id = $2",
        tenant_id,
        processor_id,
    )
    return None if row is None else (row["url"], row["signing_secret"])


# A delivery still pending, found by its key alone: never through an index on
# status, whose 'pending' entries include every delivery settled since the
# last vacuum (migration 0241 says why).
_PENDING = "tenant_id = $1 AND id = $2 AND status IS NOT DISTINCT FROM 'pending'"
GET_DELIVERY_SQL = """
    SELECT o.tenant_id, o.id, p.url, p.signing_secret, o.payload, o.attempts
      FROM processor_outbox o
      JOIN processor_recipient p ON p.tenant_id = o.tenant_id AND p.id = o.recipient_id
     WHERE o.tenant_id = $1 AND o.id = $2 AND o.status IS NOT DISTINCT FROM 'pending'"""
# A waiver while the POST was in flight stands: only a pending row is marked.
MARK_DELIVERED_SQL = (
    "UPDATE processor_outbox SET status = 'delivered', delivered_at = now(), "  # noqa: S608
    f"last_status = $3, last_error = NULL WHERE {_PENDING} RETURNING recipient_id, request_id"
)
MARK_FAILED_SQL = f"""
    UPDATE processor_outbox
       SET status = CASE WHEN $5::double precision IS NULL THEN 'dead' ELSE 'pending' END,
           next_attempt_at = clock_timestamp()
               + make_interval(secs => coalesce($5::double precision, 0)),
           last_status = $3, last_error = $4
     WHERE {_PENDING}"""  # noqa: S608 - constant text


async def get_delivery(
    con: asyncpg.Connection, tenant_id: str, delivery_id: uuid.UUID
) -> Delivery | None:
    row = await con.fetchrow(
        GET_DELIVERY_SQL,
        tenant_id,
        delivery_id,
    )
    if row is None:
        return None
    return Delivery(
        row["tenant_id"],
        row["id"],
        row["url"],
        row["signing_secret"],
        row["payload"],
        row["attempts"],
    )


async def mark_delivered(
    con: asyncpg.Connection, tenant_id: str, delivery_id: uuid.UUID, http_status: int
) -> tuple[uuid.UUID, uuid.UUID | None] | None:
    """The acknowledged event's processor and request (None: no longer pending)."""
    row = await con.fetchrow(
        MARK_DELIVERED_SQL,
        tenant_id,
        delivery_id,
        http_status,
    )
    return None if row is None else (row["recipient_id"], row["request_id"])


async def mark_failed(
    con: asyncpg.Connection,
    tenant_id: str,
    delivery_id: uuid.UUID,
    *,
    http_status: int | None,
    error: str,
    retry_in: float | None,
) -> None:
    """Schedule the next attempt in `retry_in` seconds, or (None) dead-letter the row."""
    await con.execute(
        MARK_FAILED_SQL,
        tenant_id,
        delivery_id,
        http_status,
        error,
        retry_in,
    )


async def deliveries_of(
    con: asyncpg.Connection, tenant_id: str, request_id: uuid.UUID
) -> list[DeliveryState]:
    rows = await con.fetch(
        """SELECT p.id, p.name, o.status, o.attempts, o.delivered_at, o.waived_reason
             FROM processor_outbox o
             JOIN processor_recipient p ON p.tenant_id = o.tenant_id AND p.id = o.recipient_id
            WHERE o.tenant_id = $1 AND o.request_id = $2
            ORDER BY p.name, o.seq""",
        tenant_id,
        request_id,
    )
    return [
        DeliveryState(
            r["id"],
            r["name"],
            r["status"],
            r["attempts"],
            r["delivered_at"],
            r["waived_reason"] or "",
        )
        for r in rows
    ]


async def waive(
    con: asyncpg.Connection,
    tenant_id: str,
    request_id: uuid.UUID,
    processor_id: uuid.UUID,
    *,
    actor: str,
    reason: str,
) -> int:
    """Waive the request's unsettled events to one processor; how many."""
    status = await con.execute(
        """UPDATE processor_outbox
              SET status = 'waived', waived_by = $4, waived_reason = $5, waived_at = now()
            WHERE tenant_id = $1 AND request_id = $2 AND recipient_id = $3
              AND status IN ('pending', 'dead')""",
        tenant_id,
        request_id,
        processor_id,
        actor,
        reason,
    )
    return int(status.rsplit(" ", 1)[-1])
