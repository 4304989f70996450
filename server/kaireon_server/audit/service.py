"""AuditService handlers: thin translation between protobuf and the audit chain."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import struct_pb2

from kaireon.audit.v1 import audit_pb2, audit_pb2_grpc
from kaireon_server.audit import repository
from kaireon_server.capability import ServiceContext, SimpleCapability
from kaireon_server.platform.audit_chain import render_changes, verify_tenant_chain
from kaireon_server.platform.auth import current_identity
from kaireon_server.platform.errors import InvalidArgument
from kaireon_server.platform.paging import clamp_page_size, decode_token, encode_token

Context = grpc.aio.ServicerContext[Any, Any]


def _event(tenant_id: str, rec: Any) -> audit_pb2.AuditEvent:
    changes = struct_pb2.Struct()
    changes.update(render_changes(rec))
    event = audit_pb2.AuditEvent(
        id=str(rec["id"]),
        seq=rec["seq"],
        action=rec["action"],
        entity_type=rec["entity_type"],
        entity_id=rec["entity_id"] or "",
        actor=rec["actor"],
        changes=changes,
        prev_hash=rec["prev_hash"],
        integrity_hash=rec["integrity_hash"],
        redacted=rec["redacted_at"] is not None,
        tenant_id=tenant_id,
        entity_id_digest=rec["entity_id_digest"] or "",
        personal_digests=rec["personal_digests"] or {},
    )
    event.create_time.FromDatetime(rec["created_at"])
    return event


class AuditServicer(audit_pb2_grpc.AuditServiceServicer):
    def __init__(self, ctx: ServiceContext) -> None:
        self._db = ctx.db

    async def ListAuditEvents(
        self, request: audit_pb2.ListAuditEventsRequest, context: Context
    ) -> audit_pb2.ListAuditEventsResponse:
        identity = current_identity()
        limit = clamp_page_size(request.page_size, default=100, maximum=1000)
        after = decode_token(request.page_token).get("seq", 0)
        if not isinstance(after, int) or after < 0:
            raise InvalidArgument.field("page_token", "malformed page token")
        async with self._db.transaction(identity.tenant_id, readonly=True) as con:
            rows = await repository.list_events(
                con,
                identity.tenant_id,
                after_seq=after,
                limit=limit + 1,
                action=request.action or None,
                entity_type=request.entity_type or None,
            )
        page, more = rows[:limit], len(rows) > limit
        return audit_pb2.ListAuditEventsResponse(
            events=[_event(identity.tenant_id, r) for r in page],
            next_page_token=encode_token({"seq": page[-1]["seq"]}) if more else "",
        )

    async def VerifyChain(
        self, request: audit_pb2.VerifyChainRequest, context: Context
    ) -> audit_pb2.VerifyChainResponse:
        identity = current_identity()
        async with self._db.transaction(
            identity.tenant_id, readonly=True, isolation="repeatable_read"
        ) as con:
            result = await verify_tenant_chain(con, identity.tenant_id)
        return audit_pb2.VerifyChainResponse(
            valid=result.valid,
            rows_checked=result.rows_checked,
            first_invalid_seq=result.first_invalid_seq,
            first_invalid_id=result.first_invalid_id,
            reason=result.reason,
            head_hash=result.head_hash,
        )


def build(ctx: ServiceContext) -> SimpleCapability:
    return SimpleCapability(
        audit_pb2.DESCRIPTOR.services_by_name["AuditService"],
        AuditServicer(ctx),
        audit_pb2_grpc.add_AuditServiceServicer_to_server,
    )
