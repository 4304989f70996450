"""Fixtures and helpers of the request-lifecycle tests (the session's real server)."""

from __future__ import annotations

import json
from typing import Any

import grpc
import pytest

from kaireon.requests.v1 import requests_pb2, requests_pb2_grpc
from kaireon_server.demo.seed import SeedSize, seed_tenant
from kaireon_server.platform.db import Database
from tests.support.server import metadata


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> requests_pb2_grpc.RequestServiceStub:
    return requests_pb2_grpc.RequestServiceStub(channel)


@pytest.fixture
async def seeded(db: Database, tenant: str) -> str:
    await seed_tenant(db, tenant, SeedSize(customers=3, interactions_per_customer=5))
    return tenant


async def create(
    stub: requests_pb2_grpc.RequestServiceStub,
    tenant: str,
    *,
    kind: str = "access",
    subject: str = "cust_00001",
    regulation: str = "gdpr",
    **extra: Any,
) -> requests_pb2.SubjectRequest:
    reply = await stub.CreateRequest(
        requests_pb2.CreateRequestRequest(
            kind=kind, subject_id=subject, regulation=regulation, **extra
        ),
        metadata=metadata(tenant, "operator"),
    )
    return reply.request


async def verify(
    stub: requests_pb2_grpc.RequestServiceStub,
    tenant: str,
    request_id: str,
    result: int = requests_pb2.VERIFICATION_RESULT_VERIFIED,
) -> requests_pb2.SubjectRequest:
    reply = await stub.VerifyIdentity(
        requests_pb2.VerifyIdentityRequest(
            id=request_id, method="email_link", evidence_reference="TICKET-77", result=result
        ),
        metadata=metadata(tenant, "operator"),
    )
    return reply.request


async def audit_rows(db: Database, tenant: str, entity_id: str) -> list[dict[str, Any]]:
    """The audit rows of one request, oldest first (read under the tenant's RLS)."""
    async with db.transaction(tenant, readonly=True) as con:
        rows = await con.fetch(
            "SELECT action, actor, changes::text, personal::text, subject_id FROM audit_log "
            "WHERE tenant_id = $1 AND entity_id = $2 ORDER BY seq",
            tenant,
            entity_id,
        )
    return [
        {
            "action": r["action"],
            "actor": r["actor"],
            "changes": json.loads(r["changes"]),
            "personal": json.loads(r["personal"] or "{}"),
            "subject_id": r["subject_id"],
        }
        for r in rows
    ]
