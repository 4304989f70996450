"""RequestService handlers: protobuf <-> domain, nothing else (use cases: lifecycle.py)."""

from __future__ import annotations

from datetime import UTC
from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor

from kaireon.requests.v1 import requests_pb2, requests_pb2_grpc
from kaireon_server.capability import ServiceContext
from kaireon_server.erasure.model import timeout_from_env
from kaireon_server.platform.auth import current_identity
from kaireon_server.platform.db import Database
from kaireon_server.platform.paging import clamp_page_size
from kaireon_server.platform.rpc.timestamps import optional_time
from kaireon_server.requests import processors, settlement
from kaireon_server.requests.deadlines import Policy
from kaireon_server.requests.delivery import DeliverySettings, DeliveryWorker
from kaireon_server.requests.lifecycle import RequestLifecycle, today
from kaireon_server.requests.model import SubjectRequest
from kaireon_server.requests.processor_repository import DeliveryState, Processor

Context = grpc.aio.ServicerContext[Any, Any]


_RESULTS = {
    requests_pb2.VERIFICATION_RESULT_PENDING: "pending",
    requests_pb2.VERIFICATION_RESULT_VERIFIED: "verified",
    requests_pb2.VERIFICATION_RESULT_FAILED: "failed",
}


def request_message(r: SubjectRequest) -> requests_pb2.SubjectRequest:
    now = today()
    message = requests_pb2.SubjectRequest(
        id=str(r.id),
        kind=r.kind,
        subject_id=r.subject_id,
        regulation=r.regulation,
        state=r.state.value,
        origin=r.origin,
        due_date=r.current_due(now).isoformat(),
        days_left=r.days_left(now),
        extension_days=r.extension_days,
        paused_days=r.paused_days,
        verification_method=r.verification_method or "",
        verification_reference=r.verification_reference or "",
        dsar_request_id=str(r.dsar_request_id) if r.dsar_request_id else "",
        created_by=r.created_by,
        overdue=r.overdue(now),
    )
    message.receive_time.FromDatetime(r.received_at.astimezone(UTC))
    message.update_time.FromDatetime(r.updated_at.astimezone(UTC))
    return message


def policy_message(p: Policy) -> requests_pb2.RequestPolicy:
    return requests_pb2.RequestPolicy(
        regulation=p.regulation,
        period_months=p.period_months,
        period_days=p.period_days,
        max_extension_months=p.max_extension_months,
        max_extension_days=p.max_extension_days,
        require_verification=p.require_verification,
        legal_reference=p.legal_reference,
        overridden=p.overridden,
    )


class RequestServicer(requests_pb2_grpc.RequestServiceServicer):
    def __init__(
        self, lifecycle: RequestLifecycle, db: Database, delivery: DeliverySettings
    ) -> None:
        self._requests = lifecycle
        self._db = db
        self._delivery = delivery

    async def CreateRequest(
        self, request: requests_pb2.CreateRequestRequest, context: Context
    ) -> requests_pb2.CreateRequestResponse:
        identity = current_identity()
        created = await self._requests.create(
            tenant_id=identity.tenant_id,
            actor=identity.actor,
            kind=request.kind,
            subject_id=request.subject_id,
            regulation=request.regulation,
            received_at=optional_time(request, "receive_time"),
        )
        return requests_pb2.CreateRequestResponse(request=request_message(created))

    async def GetRequest(
        self, request: requests_pb2.GetRequestRequest, context: Context
    ) -> requests_pb2.GetRequestResponse:
        identity = current_identity()
        found, deliveries = await settlement.request_with_deliveries(
            self._db, tenant_id=identity.tenant_id, request_id=request.id
        )
        return requests_pb2.GetRequestResponse(
            request=request_message(found), deliveries=[delivery_message(d) for d in deliveries]
        )

    async def ListRequests(
        self, request: requests_pb2.ListRequestsRequest, context: Context
    ) -> requests_pb2.ListRequestsResponse:
        identity = current_identity()
        page, token = await self._requests.list_requests(
            tenant_id=identity.tenant_id,
            state=request.state,
            due_before=request.due_before,
            overdue=request.overdue,
            page_size=clamp_page_size(request.page_size, default=50, maximum=500),
            page_token=request.page_token,
        )
        return requests_pb2.ListRequestsResponse(
            requests=[request_message(r) for r in page], next_page_token=token
        )

    async def VerifyIdentity(
        self, request: requests_pb2.VerifyIdentityRequest, context: Context
    ) -> requests_pb2.VerifyIdentityResponse:
        identity = current_identity()
        updated = await self._requests.verify(
            tenant_id=identity.tenant_id,
            actor=identity.actor,
            request_id=request.id,
            method=request.method,
            evidence_reference=request.evidence_reference,
            result=_RESULTS.get(request.result, ""),
        )
        return requests_pb2.VerifyIdentityResponse(request=request_message(updated))

    async def ApproveRequest(
        self, request: requests_pb2.ApproveRequestRequest, context: Context
    ) -> requests_pb2.ApproveRequestResponse:
        identity = current_identity()
        updated = await self._requests.approve(
            tenant_id=identity.tenant_id,
            actor=identity.actor,
            request_id=request.id,
            reason=request.reason,
        )
        return requests_pb2.ApproveRequestResponse(request=request_message(updated))

    async def DenyRequest(
        self, request: requests_pb2.DenyRequestRequest, context: Context
    ) -> requests_pb2.DenyRequestResponse:
        identity = current_identity()
        updated = await self._requests.deny(
            tenant_id=identity.tenant_id,
            actor=identity.actor,
            request_id=request.id,
            reason=request.reason,
        )
        return requests_pb2.DenyRequestResponse(request=request_message(updated))

    async def ExtendRequest(
        self, request: requests_pb2.ExtendRequestRequest, context: Context
    ) -> requests_pb2.ExtendRequestResponse:
        identity = current_identity()
        updated = await self._requests.extend(
            tenant_id=identity.tenant_id,
            actor=identity.actor,
            request_id=request.id,
            reason=request.reason,
            months=request.months,
            days=request.days,
        )
        return requests_pb2.ExtendRequestResponse(request=request_message(updated))

    async def PauseRequest(
        self, request: requests_pb2.PauseRequestRequest, context: Context
    ) -> requests_pb2.PauseRequestResponse:
        identity = current_identity()
        updated = await self._requests.pause(
            tenant_id=identity.tenant_id,
            actor=identity.actor,
            request_id=request.id,
            reason=request.reason,
            requires_input=request.requires_input,
        )
        return requests_pb2.PauseRequestResponse(request=request_message(updated))

    async def ResumeRequest(
        self, request: requests_pb2.ResumeRequestRequest, context: Context
    ) -> requests_pb2.ResumeRequestResponse:
        identity = current_identity()
        updated = await self._requests.resume(
            tenant_id=identity.tenant_id,
            actor=identity.actor,
            request_id=request.id,
            reason=request.reason,
        )
        return requests_pb2.ResumeRequestResponse(request=request_message(updated))

    async def CancelRequest(
        self, request: requests_pb2.CancelRequestRequest, context: Context
    ) -> requests_pb2.CancelRequestResponse:
        identity = current_identity()
        updated = await self._requests.cancel(
            tenant_id=identity.tenant_id,
            actor=identity.actor,
            request_id=request.id,
            reason=request.reason,
        )
        return requests_pb2.CancelRequestResponse(request=request_message(updated))

    async def SetRequestPolicy(
        self, request: requests_pb2.SetRequestPolicyRequest, context: Context
    ) -> requests_pb2.SetRequestPolicyResponse:
        identity = current_identity()
        p = request.policy
        stored = await self._requests.set_policy(
            tenant_id=identity.tenant_id,
            actor=identity.actor,
            policy=Policy(
                regulation=p.regulation,
                period_months=p.period_months,
                period_days=p.period_days,
                max_extension_months=p.max_extension_months,
                max_extension_days=p.max_extension_days,
                require_verification=p.require_verification,
                legal_reference="",
            ),
        )
        return requests_pb2.SetRequestPolicyResponse(policy=policy_message(stored))

    async def ListRequestPolicies(
        self, request: requests_pb2.ListRequestPoliciesRequest, context: Context
    ) -> requests_pb2.ListRequestPoliciesResponse:
        identity = current_identity()
        policies = await self._requests.list_policies(tenant_id=identity.tenant_id)
        return requests_pb2.ListRequestPoliciesResponse(
            policies=[policy_message(p) for p in policies]
        )

    async def RegisterProcessor(
        self, request: requests_pb2.RegisterProcessorRequest, context: Context
    ) -> requests_pb2.RegisterProcessorResponse:
        identity = current_identity()
        processor, secret = await processors.register(
            self._db,
            tenant_id=identity.tenant_id,
            actor=identity.actor,
            name=request.name,
            url=request.url,
            allow_private=self._delivery.allow_private_urls,
            scheme=request.signing_scheme,
            events=list(request.events),
        )
        if processor.signing_scheme == "ed25519":
            return requests_pb2.RegisterProcessorResponse(
                processor=processor_message(processor), public_key=secret
            )
        return requests_pb2.RegisterProcessorResponse(
            processor=processor_message(processor), signing_secret=secret
        )

    async def TestProcessor(
        self, request: requests_pb2.TestProcessorRequest, context: Context
    ) -> requests_pb2.TestProcessorResponse:
        identity = current_identity()
        result = await processors.send_test(
            self._db,
            self._delivery,
            tenant_id=identity.tenant_id,
            actor=identity.actor,
            processor_id=request.processor_id,
        )
        return requests_pb2.TestProcessorResponse(
            webhook_id=result.webhook_id,
            http_status=result.http_status or 0,
            error=result.error,
            delivered=result.delivered,
            latency_ms=result.latency_ms,
        )

    async def ListProcessors(
        self, request: requests_pb2.ListProcessorsRequest, context: Context
    ) -> requests_pb2.ListProcessorsResponse:
        identity = current_identity()
        found = await processors.list_all(self._db, tenant_id=identity.tenant_id)
        return requests_pb2.ListProcessorsResponse(processors=[processor_message(p) for p in found])

    async def WaiveDelivery(
        self, request: requests_pb2.WaiveDeliveryRequest, context: Context
    ) -> requests_pb2.WaiveDeliveryResponse:
        identity = current_identity()
        updated, deliveries = await settlement.waive(
            self._db,
            tenant_id=identity.tenant_id,
            actor=identity.actor,
            request_id=request.request_id,
            processor_id=request.processor_id,
            reason=request.reason,
        )
        return requests_pb2.WaiveDeliveryResponse(
            request=request_message(updated), deliveries=[delivery_message(d) for d in deliveries]
        )


def delivery_message(d: DeliveryState) -> requests_pb2.Delivery:
    message = requests_pb2.Delivery(
        processor_id=str(d.processor_id),
        processor_name=d.processor_name,
        state=d.state,
        attempts=d.attempts,
        waive_reason=d.waive_reason,
    )
    if d.acknowledged_at is not None:
        message.acknowledge_time.FromDatetime(d.acknowledged_at.astimezone(UTC))
    return message


def processor_message(p: Processor) -> requests_pb2.Processor:
    message = requests_pb2.Processor(
        id=str(p.id),
        name=p.name,
        url=p.url,
        pending=p.pending,
        delivered=p.delivered,
        dead=p.dead,
        signing_scheme=p.signing_scheme,
        events=list(p.events),
    )
    message.create_time.FromDatetime(p.created_at.astimezone(UTC))
    return message


class RequestCapability:
    """The service plus, in every process, the processor delivery worker."""

    def __init__(self, ctx: ServiceContext) -> None:
        settings = DeliverySettings.from_env(ctx.settings.env)
        lifecycle = RequestLifecycle(ctx.db, ctx.signer, timeout_from_env(ctx.settings.env))
        self._servicer = RequestServicer(lifecycle, ctx.db, settings)
        self.worker = DeliveryWorker(ctx.db, settings, ctx.listener)

    @property
    def descriptor(self) -> ServiceDescriptor:
        return requests_pb2.DESCRIPTOR.services_by_name["RequestService"]

    def add_to_server(self, server: grpc.aio.Server) -> None:
        requests_pb2_grpc.add_RequestServiceServicer_to_server(self._servicer, server)

    async def start(self) -> None:
        await self.worker.start()

    async def stop(self) -> None:
        await self.worker.stop()


def build(ctx: ServiceContext) -> RequestCapability:
    return RequestCapability(ctx)
