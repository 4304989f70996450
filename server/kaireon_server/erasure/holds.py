"""Legal holds: set, release and list; each change audited in its own transaction.

A hold change takes the same per-customer lock as an erasure, so a hold set
while an erasure runs either is seen by it (erasure refused) or waits for it.
The hold's reason enters the audit row as a personal value: it is meant to be
a case reference, but it is free text, so a later erasure may redact it.
"""

from __future__ import annotations

from collections.abc import Sequence

from kaireon_server.erasure import repository
from kaireon_server.erasure.model import (
    ACTION_HOLD_RELEASED,
    ACTION_HOLD_SET,
    ENTITY_TYPE,
    LegalHold,
    validate_customer_id,
    validate_reason,
)
from kaireon_server.platform.audit_chain import append_audit
from kaireon_server.platform.db import Database
from kaireon_server.platform.errors import AlreadyExists, InvalidArgument, NotFound
from kaireon_server.platform.paging import decode_token, encode_token


async def set_hold(
    db: Database, *, tenant_id: str, actor: str, customer_id: str, reason: str
) -> LegalHold:
    customer = validate_customer_id(customer_id)
    reason = validate_reason(reason)
    async with db.transaction(tenant_id) as con:
        await repository.lock_subject(con, tenant_id, customer)
        hold = await repository.insert_hold(con, tenant_id, customer, reason, actor)
        if hold is None:
            raise AlreadyExists(
                "the customer is already under a legal hold", reason="LEGAL_HOLD_EXISTS"
            )
        await append_audit(
            con,
            tenant_id,
            action=ACTION_HOLD_SET,
            entity_type=ENTITY_TYPE,
            entity_id=customer,
            actor=actor,
            personal={"reason": reason},
            entity_id_is_personal=True,
            subject_id=customer,
        )
    return hold


async def release_hold(db: Database, *, tenant_id: str, actor: str, customer_id: str) -> LegalHold:
    customer = validate_customer_id(customer_id)
    async with db.transaction(tenant_id) as con:
        await repository.lock_subject(con, tenant_id, customer)
        hold = await repository.delete_hold(con, tenant_id, customer)
        if hold is None:
            raise NotFound("the customer has no legal hold", reason="LEGAL_HOLD_NOT_FOUND")
        await append_audit(
            con,
            tenant_id,
            action=ACTION_HOLD_RELEASED,
            entity_type=ENTITY_TYPE,
            entity_id=customer,
            actor=actor,
            personal={"reason": hold.reason},
            entity_id_is_personal=True,
            subject_id=customer,
        )
    return hold


async def list_holds(
    db: Database, *, tenant_id: str, page_size: int, page_token: str
) -> tuple[Sequence[LegalHold], str]:
    """One page of the tenant's holds ordered by customer id, and the next page token."""
    after = decode_token(page_token).get("after", "")
    if not isinstance(after, str):
        raise InvalidArgument.field("page_token", "malformed page token")
    async with db.transaction(tenant_id, readonly=True) as con:
        rows = await repository.list_holds(
            con, tenant_id, after_customer=after, limit=page_size + 1
        )
    page = rows[:page_size]
    token = encode_token({"after": page[-1].customer_id}) if len(rows) > page_size else ""
    return page, token
