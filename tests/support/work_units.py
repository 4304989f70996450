"""How pytest-xdist shares the suite out (pytest plugin, loaded by pyproject's addopts
as kaireon_testkit.work_units; tools/dev/test.sh runs `-n N --dist loadgroup`).

A work unit is a whole test file, so module- and package-scoped fixtures (servers,
keys, a PostgreSQL of the file's own) are built once per file, not once per worker.
A file may join a named unit instead with `pytest.mark.xdist_group("name")`: every
test of that group runs on one worker, one after another — for tests that need a
machine resource exclusively or that would starve each other. Whole folders are
grouped below (GROUPED_FOLDERS), so a new file there joins its group by itself.

Units are dealt out longest first, estimated from the markers (a `slow` test starts
processes or its own PostgreSQL; a test with its own `timeout` mark said how long
it may take), so the run does not end waiting on one long file that happened to
start last. Without xdist the order is left alone.
"""

from __future__ import annotations

import os

import pytest

# Weight of a test in the longest-first estimate: a process-level (slow) test
# takes seconds to tens of seconds, an in-process one typically well under one.
SLOW_TEST_WEIGHT = 30

# Folders whose tests run on one worker, one after another, beside the rest of
# the suite: tests/multihost builds a lab of network namespaces, nginx, several
# PostgreSQL and servers per test, with partition timings that busy workers
# around it would stretch. Alone on the machine (KAIREON_TEST_EXCLUSIVE=only),
# two of its files at once keep their timings (measured: 6 passed in 182 s
# against 280 s one at a time, user CPU 65 s either way: the labs mostly wait).
GROUPED_FOLDERS = {"tests/multihost/": "multihost-lab"}


def unit_of(item: pytest.Item) -> str:
    """The work unit: an explicit xdist_group, else the test's file."""
    mark = item.get_closest_marker("xdist_group")
    if mark is not None:
        return str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
    path = item.nodeid.split("::", 1)[0]
    if os.environ.get("KAIREON_TEST_EXCLUSIVE") == "only":
        # The grouped folders alone on the machine: their files may share it
        # (tools/dev/test.sh runs two at once; each lab has its own subnet).
        return path
    for folder, group in GROUPED_FOLDERS.items():
        if path.startswith(folder):
            return group
    return path


def estimate(item: pytest.Item) -> int:
    """A rough cost: an explicit timeout (seconds) when the test set one, else by tier."""
    timeout = item.get_closest_marker("timeout")
    if timeout is not None and timeout.args:
        return int(timeout.args[0])
    return SLOW_TEST_WEIGHT if item.get_closest_marker("slow") is not None else 1


def pytest_configure(config: pytest.Config) -> None:
    # xdist would otherwise reorder units by their number of tests.
    if getattr(config.option, "dist", "no") == "loadgroup":
        config.option.loadscopereorder = False


def in_grouped_folder(item: pytest.Item) -> bool:
    path = item.nodeid.split("::", 1)[0]
    return any(path.startswith(folder) for folder in GROUPED_FOLDERS)


def select_exclusive(config: pytest.Config, items: list[pytest.Item]) -> None:
    """KAIREON_TEST_EXCLUSIVE=skip leaves the grouped folders out, =only keeps just
    them: tools/dev/test.sh runs them apart, after the other passes, with nothing
    else on the machine (their timings starved beside 3 busy workers)."""
    mode = os.environ.get("KAIREON_TEST_EXCLUSIVE", "")
    if mode not in ("skip", "only"):
        return
    keep = [item for item in items if in_grouped_folder(item) == (mode == "only")]
    dropped = [item for item in items if in_grouped_folder(item) != (mode == "only")]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


@pytest.hookimpl(tryfirst=True)  # before xdist reads the xdist_group marks
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    select_exclusive(config, items)
    if not getattr(config.option, "loadgroup", False):
        return
    weight: dict[str, int] = {}
    for item in items:
        unit = unit_of(item)
        if item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(unit))
        weight[unit] = weight.get(unit, 0) + estimate(item)
    # Stable: the tests of a unit keep their file order. Every worker sorts the
    # same collection the same way, as xdist requires.
    items.sort(key=lambda item: -weight[unit_of(item)])
