"""Three replicas and PostgreSQL, each in a network namespace of its own, nginx
in front (tests/support/netns.py). Needs root, nginx and nft."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.support.netns import Lab, LabPostgres, unavailable_reason


@pytest.fixture
def lab() -> Iterator[Lab]:
    reason = unavailable_reason()
    if reason is not None:
        # Not a skip: the guarantees below are the point of these tests.
        pytest.fail(f"multi-host tests cannot run: {reason}")
    lab = Lab.create()
    try:
        yield lab
    finally:
        lab.close()


@pytest.fixture
async def lab_pg(lab: Lab) -> AsyncIterator[LabPostgres]:
    pg = lab.postgres()
    await pg.wait_ready()
    yield pg


@pytest.fixture
def lab_env(signing_key_path: Path) -> dict[str, str]:
    return {"COSIGN_KEY": str(signing_key_path), "KAIREON_HEALTH_INTERVAL": "0.5"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A lab (namespaces, nginx, PostgreSQL, three replicas) takes a minute to
    build and tear down on a quiet 2-core machine and twice that under load;
    the suite's 120 s per test (pyproject) would fail it for being slow, not hung."""
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.timeout(300))
