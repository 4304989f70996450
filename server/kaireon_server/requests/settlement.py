"""Settlement of an erasure's propagation: a request counts as completed only
when every processor acknowledged its event or an admin waived it with an
audited reason (docs/REQUESTS.md). The completion itself is a trigger in the
settling transaction (migration 0153); this module reads and waives."""

from __future__ import annotations

from collections.abc import Sequence

from kaireon_server.platform.audit_chain import append_audit
from kaireon_server.platform.db import Database
from kaireon_server.platform.errors import FailedPrecondition
from kaireon_server.requests import processor_repository
from kaireon_server.requests import repository as requests_repository
from kaireon_server.requests.model import (
    SubjectRequest,
    not_found,
    parse_request_id,
    parse_uuid,
    validate_text,
)
from kaireon_server.requests.processor_repository import DeliveryState
from kaireon_server.requests.trail import audit_if_settled

SETTLED = frozenset({"delivered", "waived"})


def all_settled(deliveries: Sequence[DeliveryState]) -> bool:
    """Every event acknowledged (delivered) or waived; true with no processors."""
    return all(d.state in SETTLED for d in deliveries)


async def request_with_deliveries(
    db: Database, *, tenant_id: str, request_id: str
) -> tuple[SubjectRequest, list[DeliveryState]]:
    """A request and its processor deliveries, read in one transaction (one snapshot)."""
    rid = parse_request_id(request_id)
    async with db.transaction(tenant_id, readonly=True) as con:
        request = await requests_repository.get(con, tenant_id, rid)
        if request is None:
            raise not_found()
        return request, await processor_repository.deliveries_of(con, tenant_id, rid)


async def waive(
    db: Database, *, tenant_id: str, actor: str, request_id: str, processor_id: str, reason: str
) -> tuple[SubjectRequest, list[DeliveryState]]:
    rid = parse_request_id(request_id)
    pid = parse_uuid(processor_id, "processor_id")
    reason = validate_text(reason, "reason", required=True)
    async with db.transaction(tenant_id) as con:
        if await requests_repository.get(con, tenant_id, rid, lock=True) is None:
            raise not_found()
        waived = await processor_repository.waive(
            con, tenant_id, rid, pid, actor=actor, reason=reason
        )
        if not waived:
            raise FailedPrecondition(
                "the request has no unacknowledged event to that processor",
                reason="NOTHING_TO_WAIVE",
            )
        await append_audit(
            con,
            tenant_id,
            action="processor_delivery_waived",
            entity_type="subject_request",
            entity_id=str(rid),
            actor=actor,
            changes={"processorId": str(pid), "events": waived},
            # Free text may name someone: kept where an erasure can redact it.
            personal={"reason": reason},
        )
        await audit_if_settled(con, tenant_id, rid, actor)
        request = await requests_repository.get(con, tenant_id, rid)
        deliveries = await processor_repository.deliveries_of(con, tenant_id, rid)
    assert request is not None
    return request, deliveries
