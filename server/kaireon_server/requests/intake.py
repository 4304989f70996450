"""Direct calls in the lifecycle: EraseCustomer and CreateDsarRequest stay as
they are on the wire and are recorded as pre-approved requests (origin
"direct"), inside the same transaction as the erasure or the queued export.

CreateDsarRequest's row is written by the create's own statement (migration
0239, with the policy's due date computed there), so a create stays one round
trip; an erasure's runs in the erasure's transaction.

A completed erasure also queues its `subject.erased` event for the tenant's
processors (processors.py), in the same transaction.

Their regulation is GDPR (the platform's contract is GDPR's: /api/v1/gdpr/...),
received now; an erasure is completed at once, an export is in progress
until the worker completes it (migration 0150's trigger).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import asyncpg

from kaireon_server.dsar.model import LifecycleEntry
from kaireon_server.erasure import eraser
from kaireon_server.erasure.model import ErasureOutcome, NotifiedRecipient
from kaireon_server.requests import processors, repository
from kaireon_server.requests.deadlines import DEFAULT_POLICIES, due_date
from kaireon_server.requests.lifecycle import policy_for
from kaireon_server.requests.model import State, SubjectRequest

DIRECT_REGULATION = "gdpr"


async def _record(
    con: asyncpg.Connection,
    tenant_id: str,
    actor: str,
    *,
    kind: str,
    subject_id: str,
    state: State,
    dsar_request_id: uuid.UUID | None = None,
) -> SubjectRequest:
    now = datetime.now(UTC)
    policy = await policy_for(con, tenant_id, DIRECT_REGULATION)
    return await repository.insert(
        con,
        tenant_id=tenant_id,
        kind=kind,
        subject_id=subject_id,
        regulation=DIRECT_REGULATION,
        state=state,
        origin="direct",
        received_at=now,
        due=due_date(now.date(), policy),
        created_by=actor,
        dsar_request_id=dsar_request_id,
    )


def direct_erasure(tenant_id: str, actor: str) -> eraser.InTransaction:
    """The `within` hook of a direct, non-dry-run EraseCustomer."""

    async def within(
        con: asyncpg.Connection, outcome: ErasureOutcome
    ) -> Sequence[NotifiedRecipient]:
        request = await _record(
            con,
            tenant_id,
            actor,
            kind="erasure",
            subject_id=outcome.customer_id,
            state=State.COMPLETED,
        )
        return await processors.erasure_completed_in(
            con,
            tenant_id=tenant_id,
            subject_id=outcome.customer_id,
            request_id=str(request.id),
            audit_id=outcome.audit_event_id,
        )

    return within


def direct_access() -> LifecycleEntry:
    """What CreateDsarRequest also records: a new export is an in-progress GDPR
    request received now, due by the tenant's policy (or the default), written
    by the create's own statement (migration 0239); a retry with the same
    idempotency key is the same request and writes none."""
    default = DEFAULT_POLICIES[DIRECT_REGULATION]
    return LifecycleEntry(
        regulation=DIRECT_REGULATION,
        state=State.IN_PROGRESS.value,
        received_at=datetime.now(UTC),
        default_months=default.period_months,
        default_days=default.period_days,
    )
