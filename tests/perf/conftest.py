"""Fixtures of the perf smoke tests."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def results_dir() -> Iterator[Path]:
    """Where a smoke run writes its results and its embedded PostgreSQL's data.

    Not under pytest's tmp_path: on a machine shared by several sessions,
    another session's pytest prunes old basetemp directories (it keeps three),
    which deleted a running smoke test's pgdata."""
    path = Path(tempfile.mkdtemp(prefix="kaireon-perf-smoke-"))
    yield path / "results"
    shutil.rmtree(path, ignore_errors=True)
