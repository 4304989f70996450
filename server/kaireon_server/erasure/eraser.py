"""Erase (or preview the erasure of) one customer of a tenant, in one transaction.

Order inside the transaction, the same for every erasure so concurrent ones
never deadlock:

1. SET LOCAL statement and idle-in-transaction timeouts (the budget);
2. a per-customer advisory lock (serialises erasures and hold changes of it),
   before any table lock so it cannot join a lock cycle;
3. the legal-hold check (FAILED_PRECONDITION under hold, unless a dry run);
4. the registry read of the tenant's dynamic tables;
5. counts of the retained tables (consent, DSAR requests, holds, audit rows);
6. DELETE (or count) per table in data-map order, then ds_* tables by name;
7. redaction of earlier audit rows about the customer;
8. the one audit row, last, because it takes the tenant's chain lock;
9. the receipt, signed before commit so a signing failure rolls back too.

Any exception rolls the whole transaction back: nothing deleted, no audit row.
The time budget is the statement_timeout of every statement (SET LOCAL,
server-side) and, with a short grace, the bound of the whole transaction
(client-side: on expiry the running statement is cancelled and the
transaction rolled back).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace

import asyncpg

from kaireon_server.erasure import dynamic, repository
from kaireon_server.erasure.model import (
    ACTION_ERASURE,
    ACTION_PREVIEW,
    ENTITY_TYPE,
    ErasureOutcome,
    ErasureTimedOut,
    LegalHold,
    NotifiedRecipient,
    RetainedTable,
    Retention,
    validate_customer_id,
)
from kaireon_server.erasure.receipt import build_receipt, receipt_payload
from kaireon_server.erasure.repository import Target
from kaireon_server.platform import data_map
from kaireon_server.platform.audit_chain import append_audit, redact_subject
from kaireon_server.platform.canonical import format_timestamp
from kaireon_server.platform.data_map import ErasureAction
from kaireon_server.platform.db import Database
from kaireon_server.platform.errors import FailedPrecondition
from kaireon_server.platform.observability import metrics
from kaireon_server.platform.signing import Signer


@dataclass(frozen=True)
class EraseCommand:
    """What to erase, for whom, and the time budget (seconds) of the transaction."""

    tenant_id: str
    actor: str
    customer_id: str
    dry_run: bool
    timeout: float


# Runs last inside the erasure's transaction (the request lifecycle records the
# erasure there, so both commit or neither does).
# Called in the erasure's transaction, before the receipt is signed (the
# outcome has no receipt yet); answers the processors it passed the erasure on
# to, which the receipt lists.
InTransaction = Callable[
    [asyncpg.Connection, ErasureOutcome], Awaitable[Sequence[NotifiedRecipient]]
]

# Data-map tables seen to exist, per database (see repository.existing_tables).
_KNOWN_TABLES: dict[str, set[str]] = {}

# Beyond the statement timeout: time for round trips before the whole-transaction bound.
_GRACE = 0.25


def hold_refusal(hold: LegalHold) -> FailedPrecondition:
    metrics.LEGAL_HOLD_REFUSALS.inc()
    # The reason is a case reference by contract (not personal data); the
    # customer id is deliberately absent from the message.
    return FailedPrecondition(
        f"the customer is under legal hold ({hold.reason!r}, placed by {hold.created_by} "
        f"at {format_timestamp(hold.created_at)}); release the hold before erasing",
        reason="LEGAL_HOLD",
        metadata={
            "hold_reason": hold.reason,
            "hold_created_by": hold.created_by,
            "hold_create_time": format_timestamp(hold.created_at),
        },
    )


def _static_targets(present: set[str]) -> list[Target]:
    return [
        Target(t.table, t.subject_column, t.count_key or "")
        for t in data_map.erasure_order()
        if t.table in present
    ]


def _retained(present: set[str], counts: dict[str, int]) -> list[RetainedTable]:
    # Every kept table is listed, so the answer has one shape; a table whose
    # capability is not deployed holds no rows.
    return [
        RetainedTable(
            t.table,
            t.legal_basis or "",
            counts.get(t.table, 0) if t.table in present else 0,
            Retention.REDACTED if t.erasure is ErasureAction.REDACT else Retention.KEPT,
        )
        for t in data_map.retained_tables()
    ]


async def erase_customer(
    db: Database, signer: Signer, cmd: EraseCommand, *, within: InTransaction | None = None
) -> ErasureOutcome:
    customer = validate_customer_id(cmd.customer_id)
    if cmd.timeout <= 0:
        raise ErasureTimedOut("no time left for the erasure; nothing was erased")
    # The server-side statement timeout normally fires first (a clean
    # QueryCanceled); this bound covers the sum of statements and round trips.
    scope = asyncio.timeout(cmd.timeout + _GRACE)
    try:
        async with scope:
            outcome = await _erase(db, signer, cmd, customer, within)
    except FailedPrecondition:
        metrics.ERASURES.labels("refused").inc()
        raise
    except TimeoutError:
        if scope.expired():
            raise ErasureTimedOut("the erasure ran out of time; nothing was erased") from None
        raise
    metrics.ERASURES.labels("dry_run" if cmd.dry_run else "erased").inc()
    if not cmd.dry_run:
        # Categories are the data map's count keys: a closed set.
        for category, count in outcome.deleted_counts.items():
            if count:
                metrics.ERASED_ROWS.labels(category).inc(count)
    return outcome


async def _erase(
    db: Database,
    signer: Signer,
    cmd: EraseCommand,
    customer: str,
    within: InTransaction | None,
) -> ErasureOutcome:
    tenant = cmd.tenant_id
    # The statements that may wait or scale with the customer's rows get the
    # budget as their client-side bound, not the pool's shorter default.
    bound = cmd.timeout + _GRACE
    async with db.transaction(tenant) as con:
        await repository.bound_transaction(con, max(1, int(cmd.timeout * 1000)))
        await repository.lock_subject(con, tenant, customer, timeout=bound)
        hold = await repository.get_hold(con, tenant, customer)
        if hold is not None and not cmd.dry_run:
            raise hold_refusal(hold)
        ds = await dynamic.resolve(con, tenant)
        present = await repository.existing_tables(
            con, (t.table for t in data_map.TABLES), _KNOWN_TABLES.setdefault(db.dsn, set())
        )
        kept = [
            (t.table, t.subject_column)
            for t in data_map.retained_tables()
            if t.table in present and t.erasure is ErasureAction.RETAIN
        ]
        before = await repository.retained_rows(con, kept, tenant, customer)
        retained = _retained(present, before.counts)

        counts = dict.fromkeys(data_map.count_keys(), 0)
        measure = repository.count_rows if cmd.dry_run else repository.delete_rows
        for target in [*_static_targets(present), *ds.targets]:
            counts[target.count_key] += await measure(con, target, tenant, customer, timeout=bound)

        if not cmd.dry_run:
            redacted = await redact_subject(
                con, tenant, customer, keep_ids=before.erasure_record_ids
            )
            # Report what was redacted (a row appended since the count is included).
            retained = [
                RetainedTable(r.table, r.legal_basis, redacted, r.retention)
                if r.retention is Retention.REDACTED
                else r
                for r in retained
            ]
        record = await append_audit(
            con,
            tenant,
            action=ACTION_PREVIEW if cmd.dry_run else ACTION_ERASURE,
            entity_type=ENTITY_TYPE,
            entity_id=customer,
            actor=cmd.actor,
            changes=counts,
            # The erasure record keeps the customer id in clear (the platform's
            # contract; proof of erasure, Art. 5(2)); a preview is ordinary
            # personal data, redacted by a later erasure.
            entity_id_is_personal=cmd.dry_run,
            subject_id=customer,
        )
        outcome = ErasureOutcome(
            customer_id=customer,
            dry_run=cmd.dry_run,
            deleted_counts=counts,
            skipped_tables=ds.skipped,
            retained=tuple(retained),
            legal_hold=hold,
            audit_event_id=record.id,
        )
        # The caller's writes (the request record, the processors' events)
        # before the receipt, which lists the processors notified.
        recipients = tuple(await within(con, outcome)) if within is not None else ()
        if not cmd.dry_run:
            payload = receipt_payload(
                tenant_id=tenant,
                customer_id=customer,
                deleted_counts=counts,
                skipped_tables=ds.skipped,
                audit=record,
                key_id=signer.key_id,
                recipients=recipients,
            )
            outcome = replace(outcome, receipt=build_receipt(signer, payload))
    return outcome
