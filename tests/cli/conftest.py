"""Fixtures of the CLI tests: a tenant seeded with the small demo data set."""

from __future__ import annotations

import pytest

from kaireon_server.demo.seed import seed_tenant
from kaireon_server.platform.db import Database
from tests.erasure.support import SMALL


@pytest.fixture
async def seeded(db: Database, tenant: str) -> str:
    await seed_tenant(db, tenant, SMALL)
    return tenant
