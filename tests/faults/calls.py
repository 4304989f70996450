"""One representative unary call per RPC family, for the stall and restart tests."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import json_format
from google.rpc import error_details_pb2, status_pb2

from kaireon.audit.v1 import audit_pb2, audit_pb2_grpc
from kaireon.dsar.v1 import dsar_pb2, dsar_pb2_grpc
from kaireon.erasure.v1 import erasure_pb2, erasure_pb2_grpc
from kaireon.flow.v1 import flow_pb2, flow_pb2_grpc
from kaireon.provenance.v1 import provenance_pb2, provenance_pb2_grpc
from tests.support.server import metadata

# (channel, tenant, deadline or None) -> the call's response
Call = Callable[[grpc.aio.Channel, str, float | None], Awaitable[Any]]

_FLOW = {
    "nodes": [
        {"id": "src", "type": "source.inline", "config": {"records": [{"n": 1}, {"n": 2}]}},
        {
            "id": "big",
            "type": "transform.filter",
            "dependsOn": ["src"],
            "config": {"where": "n > 1"},
        },
    ]
}


async def provenance_read(channel: grpc.aio.Channel, tenant: str, deadline: float | None) -> Any:
    return await provenance_pb2_grpc.ProvenanceServiceStub(channel).GetDecisionProvenance(
        provenance_pb2.GetDecisionProvenanceRequest(decision_id="dec_00001_1"),
        metadata=metadata(tenant),
        timeout=deadline,
    )


async def dsar_create(channel: grpc.aio.Channel, tenant: str, deadline: float | None) -> Any:
    return await dsar_pb2_grpc.DsarServiceStub(channel).CreateDsarRequest(
        dsar_pb2.CreateDsarRequestRequest(request_type="export", subject_id="cust_00001"),
        metadata=metadata(tenant, "operator"),
        timeout=deadline,
    )


async def erasure(channel: grpc.aio.Channel, tenant: str, deadline: float | None) -> Any:
    return await erasure_pb2_grpc.ErasureServiceStub(channel).EraseCustomer(
        erasure_pb2.EraseCustomerRequest(customer_id="cust_00002"),
        metadata=metadata(tenant),
        timeout=deadline,
    )


async def flow_start(channel: grpc.aio.Channel, tenant: str, deadline: float | None) -> Any:
    return await flow_pb2_grpc.FlowRunnerServiceStub(channel).StartRun(
        flow_pb2.StartRunRequest(
            definition=json_format.ParseDict(_FLOW, flow_pb2.FlowDefinition()),
            run_id=f"r{secrets.token_hex(4)}",
        ),
        metadata=metadata(tenant, "operator"),
        timeout=deadline,
    )


async def audit_verify(channel: grpc.aio.Channel, tenant: str, deadline: float | None) -> Any:
    return await audit_pb2_grpc.AuditServiceStub(channel).VerifyChain(
        audit_pb2.VerifyChainRequest(), metadata=metadata(tenant), timeout=deadline
    )


FAMILIES: dict[str, Call] = {
    "provenance_read": provenance_read,
    "dsar_create": dsar_create,
    "erasure": erasure,
    "flow_start": flow_start,
    "audit_verify": audit_verify,
}


def error_reason(error: grpc.aio.AioRpcError) -> str:
    """The google.rpc.ErrorInfo reason of a failed call ("" when none)."""
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            for detail in status_pb2.Status.FromString(value).details:
                info = error_details_pb2.ErrorInfo()
                if detail.Unpack(info):
                    return str(info.reason)
    return ""
