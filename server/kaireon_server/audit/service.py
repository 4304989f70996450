"""AuditService handlers: protobuf <-> domain (audit/log.py), nothing else."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import struct_pb2

from kaireon.audit.v1 import audit_pb2, audit_pb2_grpc
from kaireon_server.audit import log
from kaireon_server.capability import ServiceContext, SimpleCapability
from kaireon_server.platform.auth import current_identity
from kaireon_server.platform.paging import clamp_page_size

Context = grpc.aio.ServicerContext[Any, Any]


def _event(tenant_id: str, event: log.AuditEvent) -> audit_pb2.AuditEvent:
    changes = struct_pb2.Struct()
    changes.update(event.changes)
    message = audit_pb2.AuditEvent(
        id=event.id,
        seq=event.seq,
        action=event.action,
        entity_type=event.entity_type,
        entity_id=event.entity_id,
        actor=event.actor,
        changes=changes,
        prev_hash=event.prev_hash,
        integrity_hash=event.integrity_hash,
        redacted=event.redacted,
        tenant_id=tenant_id,
        entity_id_digest=event.entity_id_digest,
        personal_digests=event.personal_digests,
    )
    message.create_time.FromDatetime(event.created_at)
    return message


class AuditServicer(audit_pb2_grpc.AuditServiceServicer):
    def __init__(self, ctx: ServiceContext) -> None:
        self._db = ctx.db

    async def ListAuditEvents(
        self, request: audit_pb2.ListAuditEventsRequest, context: Context
    ) -> audit_pb2.ListAuditEventsResponse:
        identity = current_identity()
        page, token = await log.list_events(
            self._db,
            tenant_id=identity.tenant_id,
            limit=clamp_page_size(request.page_size, default=100, maximum=1000),
            page_token=request.page_token,
            action=request.action,
            entity_type=request.entity_type,
        )
        return audit_pb2.ListAuditEventsResponse(
            events=[_event(identity.tenant_id, e) for e in page], next_page_token=token
        )

    async def VerifyChain(
        self, request: audit_pb2.VerifyChainRequest, context: Context
    ) -> audit_pb2.VerifyChainResponse:
        identity = current_identity()
        result = await log.verify_chain(self._db, tenant_id=identity.tenant_id)
        return audit_pb2.VerifyChainResponse(
            valid=result.valid,
            rows_checked=result.rows_checked,
            first_invalid_seq=result.first_invalid_seq,
            first_invalid_id=result.first_invalid_id,
            reason=result.reason,
            head_hash=result.head_hash,
        )


def build(ctx: ServiceContext) -> SimpleCapability[AuditServicer]:
    return SimpleCapability(
        audit_pb2.DESCRIPTOR.services_by_name["AuditService"],
        AuditServicer(ctx),
        audit_pb2_grpc.add_AuditServiceServicer_to_server,
    )
