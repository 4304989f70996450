"""Fixtures of the erasure tests: stubs and seeded tenants."""

from __future__ import annotations

import secrets

import grpc
import pytest

from kaireon.audit.v1 import audit_pb2_grpc
from kaireon.erasure.v1 import erasure_pb2_grpc
from kaireon_server.demo.seed import seed_tenant
from kaireon_server.platform.db import Database
from tests.erasure.support import SMALL


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> erasure_pb2_grpc.ErasureServiceStub:
    return erasure_pb2_grpc.ErasureServiceStub(channel)


@pytest.fixture
def audit_stub(channel: grpc.aio.Channel) -> audit_pb2_grpc.AuditServiceStub:
    return audit_pb2_grpc.AuditServiceStub(channel)


@pytest.fixture
async def seeded(db: Database, tenant: str) -> str:
    """`tenant`, filled with the small demo data set."""
    await seed_tenant(db, tenant, SMALL)
    return tenant


@pytest.fixture
async def other_tenant(db: Database) -> str:
    """A second seeded tenant with the same customer ids, to prove isolation."""
    other = f"t{secrets.token_hex(5)}"
    await seed_tenant(db, other, SMALL)
    return other
