"""The audit rows of a request's transitions: one shape for every writer
(the lifecycle's RPCs, settlement, the delivery worker)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import asyncpg

from kaireon_server.platform.audit_chain import append_audit
from kaireon_server.requests import repository
from kaireon_server.requests.model import ENTITY_TYPE, State, SubjectRequest, Verb


async def audit(
    con: asyncpg.Connection,
    request: SubjectRequest,
    verb: Verb,
    actor: str,
    *,
    before: State | None,
    changes: Mapping[str, Any] | None = None,
    personal: Mapping[str, str] | None = None,
    about_subject: bool = True,
) -> None:
    """The audit row of one transition: actor, from/to state and the due date
    in clear; the subject id and free-text reason in the row's personal part
    (an erasure redacts them). After an erasure the row names no subject."""
    values = {k: v for k, v in (personal or {}).items() if v}
    if about_subject:
        values["subjectId"] = request.subject_id
    await append_audit(
        con,
        request.tenant_id,
        action=verb.action,
        entity_type=ENTITY_TYPE,
        entity_id=str(request.id),
        actor=actor,
        changes={
            "kind": request.kind,
            "regulation": request.regulation,
            "from": before.value if before else None,
            "to": request.state.value,
            "dueDate": request.due_date.isoformat(),
            **(changes or {}),
        },
        personal=values,
        subject_id=request.subject_id if about_subject else None,
    )


async def audit_if_settled(
    con: asyncpg.Connection, tenant_id: str, request_id: uuid.UUID, actor: str
) -> None:
    """Call after settling (acknowledging or waiving) one of the request's
    unsettled events in this transaction: if the request is now completed, this
    transaction completed it (the trigger of migration 0153: a request with an
    unsettled event cannot be completed before), so its row is written. The
    row names no subject: the erasure came first."""
    now = await repository.get(con, tenant_id, request_id)
    if now is not None and now.state is State.COMPLETED:
        await audit(con, now, Verb.COMPLETED, actor, before=State.IN_PROGRESS, about_subject=False)
