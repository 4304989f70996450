"""Fixtures of the erasure tests: stubs and seeded tenants."""

from __future__ import annotations

import secrets

import grpc
import pytest

from kaireon.audit.v1 import audit_pb2_grpc
from kaireon.erasure.v1 import erasure_pb2_grpc
from kaireon_server.demo.seed import customer_id, seed_tenant
from kaireon_server.platform.db import Database
from tests.erasure.support import SMALL, add_dsar_export


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> erasure_pb2_grpc.ErasureServiceStub:
    return erasure_pb2_grpc.ErasureServiceStub(channel)


@pytest.fixture
def audit_stub(channel: grpc.aio.Channel) -> audit_pb2_grpc.AuditServiceStub:
    return audit_pb2_grpc.AuditServiceStub(channel)


@pytest.fixture
async def seeded(db: Database, tenant: str) -> str:
    """`tenant`, filled with the small demo data set and a stored DSAR export per customer."""
    await seed_tenant(db, tenant, SMALL)
    for n in range(1, SMALL.customers + 1):
        await add_dsar_export(db, tenant, customer_id(n))
    return tenant


@pytest.fixture
async def other_tenant(db: Database) -> str:
    """A second seeded tenant with the same customer ids, to prove isolation."""
    other = f"t{secrets.token_hex(5)}"
    await seed_tenant(db, other, SMALL)
    for n in range(1, SMALL.customers + 1):
        await add_dsar_export(db, other, customer_id(n))
    return other
