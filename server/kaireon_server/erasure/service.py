"""ErasureService handlers: protobuf <-> domain, nothing else.

Errors are domain errors raised below; the interceptor maps them (and
asyncpg's) to gRPC status codes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import grpc

from kaireon.erasure.v1 import erasure_pb2, erasure_pb2_grpc
from kaireon_server.audit import tlog
from kaireon_server.capability import ServiceContext, SimpleCapability
from kaireon_server.erasure import holds
from kaireon_server.erasure.eraser import EraseCommand, erase_customer
from kaireon_server.erasure.model import (
    ErasureOutcome,
    LegalHold,
    RetainedTable,
    Retention,
    timeout_from_env,
)
from kaireon_server.platform.auth import current_identity
from kaireon_server.platform.paging import clamp_page_size
from kaireon_server.requests.intake import direct_erasure

Context = grpc.aio.ServicerContext[Any, Any]

INT32_MAX = 2**31 - 1
# Leave the handler time to answer before the caller's own deadline expires.
_DEADLINE_MARGIN = 0.05

_COUNT_FIELDS = {f.json_name: f.name for f in erasure_pb2.DeletedCounts.DESCRIPTOR.fields}
_RETENTION = {
    Retention.KEPT: erasure_pb2.RETENTION_KEPT,
    Retention.REDACTED: erasure_pb2.RETENTION_REDACTED,
}


def _int32(value: int) -> int:
    # The REST contract prints numbers (int32); the exact figure stays in the receipt.
    return min(value, INT32_MAX)


def counts_to_proto(counts: Mapping[str, int]) -> erasure_pb2.DeletedCounts:
    return erasure_pb2.DeletedCounts(**{_COUNT_FIELDS[k]: _int32(v) for k, v in counts.items()})


def hold_to_proto(hold: LegalHold) -> erasure_pb2.LegalHold:
    message = erasure_pb2.LegalHold(
        customer_id=hold.customer_id, reason=hold.reason, created_by=hold.created_by
    )
    message.create_time.FromDatetime(hold.created_at)
    return message


def _retained(table: RetainedTable) -> erasure_pb2.RetainedTable:
    return erasure_pb2.RetainedTable(
        table=table.table,
        legal_basis=table.legal_basis,
        row_count=_int32(table.row_count),
        retention=_RETENTION[table.retention],
    )


def outcome_to_proto(
    outcome: ErasureOutcome, proof: tlog.EvidenceProof | None = None
) -> erasure_pb2.EraseCustomerResponse:
    response = erasure_pb2.EraseCustomerResponse(
        success=True,
        customer_id=outcome.customer_id,
        deleted_counts=counts_to_proto(outcome.deleted_counts),
        total_deleted=_int32(outcome.total_deleted),
        skipped_tables=list(outcome.skipped_tables),
        dry_run=outcome.dry_run,
        retained_tables=[_retained(t) for t in outcome.retained],
    )
    if outcome.legal_hold is not None:
        response.legal_hold.CopyFrom(hold_to_proto(outcome.legal_hold))
    if outcome.receipt is not None:
        r = outcome.receipt
        response.receipt.CopyFrom(
            erasure_pb2.ErasureReceipt(
                canonical_payload=r.canonical_payload,
                digest_sha256=r.digest_sha256,
                signature=r.signature,
                key_id=r.key_id,
                tlog_proof=proof.text if proof else "",
                tlog_proof_pending=proof.pending if proof else False,
            )
        )
    return response


class ErasureServicer(erasure_pb2_grpc.ErasureServiceServicer):
    def __init__(self, ctx: ServiceContext) -> None:
        self._db = ctx.db
        self._signer = ctx.signer
        self._timeout = timeout_from_env(ctx.settings.env)
        self._tlog = tlog.TlogSettings.from_env(ctx.settings.env)

    def _budget(self, context: Context) -> float:
        # grpc-stubs says float; without a client deadline grpc may give None or a huge value.
        remaining: float | None = context.time_remaining()
        if remaining is None:
            return self._timeout
        return max(0.0, min(self._timeout, remaining - _DEADLINE_MARGIN))

    async def EraseCustomer(
        self, request: erasure_pb2.EraseCustomerRequest, context: Context
    ) -> erasure_pb2.EraseCustomerResponse:
        identity = current_identity()
        command = EraseCommand(
            tenant_id=identity.tenant_id,
            actor=identity.actor,
            customer_id=request.customer_id,
            dry_run=request.dry_run,
            timeout=self._budget(context),
        )
        # A real erasure is also a completed request of the lifecycle (a preview is not).
        within = None if request.dry_run else direct_erasure(identity.tenant_id, identity.actor)
        outcome = await erase_customer(self._db, self._signer, command, within=within)
        proof = None
        if outcome.receipt is not None:
            # Committed: wait (bounded) for the row's checkpoint, then answer either way.
            proof = await tlog.evidence_proof_of(
                self._db,
                self._tlog,
                tenant_id=identity.tenant_id,
                event_id=outcome.audit_event_id,
                wait=min(self._tlog.proof_wait, self._budget(context)),
            )
        return outcome_to_proto(outcome, proof)

    async def SetLegalHold(
        self, request: erasure_pb2.SetLegalHoldRequest, context: Context
    ) -> erasure_pb2.SetLegalHoldResponse:
        identity = current_identity()
        hold = await holds.set_hold(
            self._db,
            tenant_id=identity.tenant_id,
            actor=identity.actor,
            customer_id=request.customer_id,
            reason=request.reason,
        )
        return erasure_pb2.SetLegalHoldResponse(legal_hold=hold_to_proto(hold))

    async def ReleaseLegalHold(
        self, request: erasure_pb2.ReleaseLegalHoldRequest, context: Context
    ) -> erasure_pb2.ReleaseLegalHoldResponse:
        identity = current_identity()
        hold = await holds.release_hold(
            self._db,
            tenant_id=identity.tenant_id,
            actor=identity.actor,
            customer_id=request.customer_id,
        )
        return erasure_pb2.ReleaseLegalHoldResponse(legal_hold=hold_to_proto(hold))

    async def ListLegalHolds(
        self, request: erasure_pb2.ListLegalHoldsRequest, context: Context
    ) -> erasure_pb2.ListLegalHoldsResponse:
        identity = current_identity()
        page, token = await holds.list_holds(
            self._db,
            tenant_id=identity.tenant_id,
            page_size=clamp_page_size(request.page_size, default=100, maximum=1000),
            page_token=request.page_token,
        )
        return erasure_pb2.ListLegalHoldsResponse(
            legal_holds=[hold_to_proto(h) for h in page], next_page_token=token
        )


def build(ctx: ServiceContext) -> SimpleCapability[ErasureServicer]:
    return SimpleCapability(
        erasure_pb2.DESCRIPTOR.services_by_name["ErasureService"],
        ErasureServicer(ctx),
        erasure_pb2_grpc.add_ErasureServiceServicer_to_server,
    )
