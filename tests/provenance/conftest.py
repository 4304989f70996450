"""Fixtures of the provenance tests: a seeded tenant and a helper that fetches a bundle."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from kaireon.provenance.v1 import provenance_pb2, provenance_pb2_grpc
from kaireon_server.demo.seed import SeedSize, seed_tenant
from kaireon_server.platform.db import Database
from tests.support.server import metadata

# Seed decisions: k=1 and k=2 fall before RULES_CHANGED_AT, k=3 after it.
BEFORE_CHANGE = "dec_00001_1"
AFTER_CHANGE = "dec_00001_3"
SMALL_SEED = SeedSize(customers=2, interactions_per_customer=2, decisions_per_customer=3)


@dataclass(frozen=True)
class Fetched:
    body: bytes
    digest: str
    signature: str
    schema: str
    content_type: str
    initial_metadata: dict[str, str]

    @property
    def json(self) -> Any:
        return json.loads(self.body)


async def fetch(
    channel: grpc.aio.Channel, tenant: str, decision_id: str, *, role: str = "admin"
) -> Fetched:
    stub = provenance_pb2_grpc.ProvenanceServiceStub(channel)
    call = stub.GetDecisionProvenance(
        provenance_pb2.GetDecisionProvenanceRequest(decision_id=decision_id),
        metadata=metadata(tenant, role),
    )
    reply = await call
    initial = {k: v for k, v in (await call.initial_metadata()) or () if isinstance(v, str)}
    return Fetched(
        body=reply.bundle.data,
        digest=reply.digest_sha256,
        signature=reply.signature,
        schema=reply.schema,
        content_type=reply.bundle.content_type,
        initial_metadata=initial,
    )


@pytest.fixture
async def seeded(db: Database, tenant: str) -> str:
    """A fresh tenant holding the demo data set (small)."""
    await seed_tenant(db, tenant, SMALL_SEED)
    return tenant
