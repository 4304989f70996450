"""Test tiers (pytest plugin, loaded by pyproject's addopts as kaireon_testkit.tiers).

`db` is derived, not written by hand: a test whose fixtures reach a PostgreSQL
(`pg_admin_dsn`: the session database, the in-process server, `db`) gets it, so
`-m db` is exactly the tests that can behave differently on another PostgreSQL
version; CI runs `-m "db and not slow"` on the second server (tools/dev/test.sh).
A test that starts a PostgreSQL of its own is process-level and marked `slow`.
"""

from __future__ import annotations

import pytest

DATABASE_FIXTURE = "pg_admin_dsn"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if DATABASE_FIXTURE in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.db)
