"""AuditService handlers: protobuf <-> domain (audit/log.py), nothing else."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.api import httpbody_pb2
from google.protobuf import struct_pb2
from google.protobuf.descriptor import ServiceDescriptor

from kaireon.audit.v1 import audit_pb2, audit_pb2_grpc
from kaireon_server.audit import log, tiles, tlog
from kaireon_server.capability import ServiceContext
from kaireon_server.platform.auth import current_identity
from kaireon_server.platform.errors import InvalidArgument
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


def _checkpoint(settings: tlog.TlogSettings, view: tlog.CheckpointView) -> audit_pb2.Checkpoint:
    return audit_pb2.Checkpoint(
        origin=view.origin,
        tree_size=view.size,
        root_hash=view.root_hash,
        note=view.note,
        signed=view.signed,
        cosignatures=list(view.cosignatures),
        log_vkey=view.log_vkey,
        witness_quorum_met=view.signed and tlog.quorum_met(settings, view),
    )


def _verify_result(
    result: tlog.TlogVerifyResult, more: bool = False
) -> audit_pb2.VerifyLogResponse:
    return audit_pb2.VerifyLogResponse(
        valid=result.valid,
        start=result.start,
        end=result.end,
        tree_size=result.tree_size,
        rows_checked=result.rows_checked,
        first_invalid_seq=result.first_invalid_seq,
        first_invalid_id=result.first_invalid_id,
        reason=result.reason,
        more=more,
    )


class AuditServicer(audit_pb2_grpc.AuditServiceServicer):
    def __init__(self, ctx: ServiceContext, settings: tlog.TlogSettings) -> None:
        self._db = ctx.db
        self._tlog = settings

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
        check = await tlog.verify_chain_incremental(self._db, tenant_id=identity.tenant_id)
        result = check.result
        return audit_pb2.VerifyChainResponse(
            resumed_from_seq=check.resumed_from_seq,
            more=check.more,
            valid=result.valid,
            rows_checked=result.rows_checked,
            first_invalid_seq=result.first_invalid_seq,
            first_invalid_id=result.first_invalid_id,
            reason=result.reason,
            head_hash=result.head_hash,
        )

    async def GetCheckpoint(
        self, request: audit_pb2.GetCheckpointRequest, context: Context
    ) -> audit_pb2.GetCheckpointResponse:
        identity = current_identity()
        view = await tlog.get_checkpoint(
            self._db, self._tlog, tenant_id=identity.tenant_id, tree_size=request.tree_size
        )
        return audit_pb2.GetCheckpointResponse(checkpoint=_checkpoint(self._tlog, view))

    async def GetInclusionProof(
        self, request: audit_pb2.GetInclusionProofRequest, context: Context
    ) -> audit_pb2.GetInclusionProofResponse:
        identity = current_identity()
        event_id = request.event_id or None
        if event_id is not None:
            event_id = tlog.check_event_id(event_id)
        elif request.index < 0:
            raise InvalidArgument.field("index", "must not be negative")
        proof = await tlog.get_inclusion_proof(
            self._db,
            self._tlog,
            tenant_id=identity.tenant_id,
            index=None if event_id else request.index,
            event_id=event_id,
            tree_size=request.tree_size,
        )
        return audit_pb2.GetInclusionProofResponse(
            index=proof.index,
            tree_size=proof.tree_size,
            hashes=list(proof.hashes),
            leaf=proof.leaf.canonical().decode(),
            tlog_proof=tlog.evidence_proof(proof),
            checkpoint=_checkpoint(self._tlog, proof.checkpoint),
        )

    async def GetConsistencyProof(
        self, request: audit_pb2.GetConsistencyProofRequest, context: Context
    ) -> audit_pb2.GetConsistencyProofResponse:
        identity = current_identity()
        hashes = await tlog.get_consistency_proof(
            self._db,
            tenant_id=identity.tenant_id,
            first_size=request.first_size,
            second_size=request.second_size,
        )
        return audit_pb2.GetConsistencyProofResponse(hashes=hashes)

    async def ListEntries(
        self, request: audit_pb2.ListEntriesRequest, context: Context
    ) -> audit_pb2.ListEntriesResponse:
        identity = current_identity()
        export = await tlog.export_entries(
            self._db,
            self._tlog,
            tenant_id=identity.tenant_id,
            start=request.start,
            end=request.end,
            tree_size=request.tree_size,
        )
        return audit_pb2.ListEntriesResponse(
            export=tlog.export_json(export.document),
            start=export.start,
            end=export.end,
            tree_size=export.tree_size,
        )

    async def AddCosignature(
        self, request: audit_pb2.AddCosignatureRequest, context: Context
    ) -> audit_pb2.AddCosignatureResponse:
        identity = current_identity()
        view = await tlog.add_cosignature(
            self._db,
            self._tlog,
            tenant_id=identity.tenant_id,
            tree_size=request.tree_size,
            line=request.cosignature,
        )
        return audit_pb2.AddCosignatureResponse(checkpoint=_checkpoint(self._tlog, view))

    async def VerifyLog(
        self, request: audit_pb2.VerifyLogRequest, context: Context
    ) -> audit_pb2.VerifyLogResponse:
        identity = current_identity()
        if request.start < 0 or request.end < 0:
            raise InvalidArgument.field("start", "indexes are not negative")
        if not request.range and (request.start or request.end):
            raise InvalidArgument.field("range", "set range to verify [start, end)")
        result, more = await tlog.verify(
            self._db,
            self._tlog,
            tenant_id=identity.tenant_id,
            start=request.start if request.range else None,
            end=request.end,
        )
        return _verify_result(result, more)

    async def StreamVerifyLog(
        self, request: audit_pb2.StreamVerifyLogRequest, context: Context
    ) -> AsyncIterator[audit_pb2.StreamVerifyLogResponse]:
        identity = current_identity()
        async for item in tlog.verify_range_stream(
            self._db, self._tlog, tenant_id=identity.tenant_id, start=0, end=0, limit=None
        ):
            if isinstance(item, tlog.TlogVerifyResult):
                yield audit_pb2.StreamVerifyLogResponse(
                    rows_checked=item.rows_checked,
                    position=item.end,
                    tree_size=item.tree_size,
                    result=_verify_result(item),
                )
            else:
                yield audit_pb2.StreamVerifyLogResponse(
                    rows_checked=item.rows_checked,
                    position=item.position,
                    tree_size=item.tree_size,
                )

    async def GetLogResource(
        self, request: audit_pb2.GetLogResourceRequest, context: Context
    ) -> audit_pb2.GetLogResourceResponse:
        identity = current_identity()
        resource = await tiles.log_resource(
            self._db, self._tlog, tenant_id=identity.tenant_id, path=request.path
        )
        return audit_pb2.GetLogResourceResponse(
            body=httpbody_pb2.HttpBody(content_type=resource.content_type, data=resource.data)
        )


class AuditCapability:
    """The service plus, in every process, the transparency log's integrator."""

    def __init__(self, ctx: ServiceContext) -> None:
        self.settings = tlog.TlogSettings.from_env(ctx.settings.env)
        self._servicer = AuditServicer(ctx, self.settings)
        self.integrator = tlog.Integrator(ctx.db, self.settings)
        if self.settings.enabled:
            ctx.listener.subscribe(tlog.NOTIFY_CHANNEL, self.integrator.wake, self.integrator.wake)
        # The demo's seeded rows are checkpointed before the server says it serves,
        # so docs/AUDIT.md's round trip, run at once, finds the demo log signed (the
        # integrator's first round would come a few hundred milliseconds later).
        self._integrate_at_start = ctx.settings.demo and self.settings.enabled

    @property
    def descriptor(self) -> ServiceDescriptor:
        return audit_pb2.DESCRIPTOR.services_by_name["AuditService"]

    def add_to_server(self, server: grpc.aio.Server) -> None:
        audit_pb2_grpc.add_AuditServiceServicer_to_server(self._servicer, server)

    def key_summary(self) -> dict[str, object]:
        """Which audit-log key is loaded (its public fingerprint, never the key)."""
        return {
            "log_name": self.settings.log_name,
            "log_key_fingerprint": tlog.log_key_fingerprint(self.settings.log_key),
        }

    async def start(self) -> None:
        if self._integrate_at_start:
            await self.integrator.integrate_pending()
        self.integrator.start()

    async def stop(self) -> None:
        await self.integrator.stop()


def build(ctx: ServiceContext) -> AuditCapability:
    return AuditCapability(ctx)
