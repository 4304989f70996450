"""Flow test fixtures.

The test node types (nodes_for_tests.py) are registered the way custom node
types are in production: an entry point in the `kaireon.flow.nodes` group of
an installed distribution. A throwaway .dist-info directory is put on sys.path
when this conftest is imported, before the session server builds its
registry, and on PYTHONPATH for server subprocesses.
"""

from __future__ import annotations

import importlib
import os
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from kaireon_server.flow import (
    InMemoryCheckpointStore,
    NodeRegistry,
    PostgresCheckpointStore,
    default_registry,
)
from kaireon_server.flow.stores import CheckpointStore
from kaireon_server.platform.db import Database
from tests.flow.nodes_for_tests import EFFECT_TABLE
from tests.support.server import ServerProcess


def make_plugin_dir(entry_points: str, name: str = "kaireon_flow_testnodes") -> Path:
    """A directory holding one .dist-info with the given entry_points.txt."""
    root = Path(tempfile.mkdtemp(prefix="kaireon-flow-plugin-"))
    info = root / f"{name}-0.0.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.0.0\n")
    (info / "entry_points.txt").write_text(entry_points)
    return root


PLUGIN_DIR = make_plugin_dir("[kaireon.flow.nodes]\ntest.step = tests.flow.nodes_for_tests:Step\n")
sys.path.append(str(PLUGIN_DIR))
importlib.invalidate_caches()


@pytest.fixture(scope="session")
def registry() -> NodeRegistry:
    return default_registry()


@pytest.fixture(scope="session")
async def effect_table(db: Database) -> None:
    async with db.owner_connection() as con:
        await con.execute(EFFECT_TABLE)


@pytest.fixture(params=["memory", "postgres"])
async def store(
    request: pytest.FixtureRequest, db: Database, effect_table: None
) -> AsyncIterator[CheckpointStore]:
    """Both checkpoint stores: every test using it runs once per store."""
    if request.param == "memory":
        yield InMemoryCheckpointStore(db)
    else:
        yield PostgresCheckpointStore(db)


# Subprocess servers that load the test nodes (tests/flow/nodes_for_tests.py).
@pytest.fixture
def process_env(server_env: dict[str, str], effect_table: None) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(PLUGIN_DIR), os.environ.get("PYTHONPATH", "")) if p)
    return {**server_env, "PYTHONPATH": path, "KAIREON_FLOW_SWEEP_SECONDS": "0.5"}


@pytest.fixture
def servers() -> Iterator[list[ServerProcess]]:
    started: list[ServerProcess] = []
    yield started
    for server in started:
        server.stop()
