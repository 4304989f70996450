"""Schemathesis over the REST adapter's OpenAPI, checking the database after each rejection.

tests/contract/test_openapi_fuzz.py runs the schemathesis CLI for status, content
type and schema conformance. This one drives schemathesis' Python API case by
case (positive and negative generation for every operation), so that around
every request the tenant's snapshot (row counts, content digests, audit chain
head, read with the owner connection) can be compared: no 5xx, and every 4xx
left the database as it was.

The HTTP client is synchronous (requests), so cases run in a worker thread and
reach the session's event loop (server, snapshots) with run_coroutine_threadsafe.
KAIREON_OPENAPI_EXAMPLES raises the examples per operation and mode (default 6).
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from collections.abc import Coroutine
from typing import Any, TypeVar

import grpc
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from kaireon_server.app import App
from kaireon_server.platform.db import Database
from tests.security.conftest import World, new_tenant, populate
from tests.security.rpcs import METHOD_NAMES
from tests.security.snapshot import Snapshotter
from tests.security.support import assert_healthy, settle

# Long sweeps: run on the embedded PostgreSQL pass of CI, not again on PostgreSQL 15.
pytestmark = pytest.mark.slow

EXAMPLES = int(os.environ.get("KAIREON_OPENAPI_EXAMPLES", "6"))
T = TypeVar("T")


@pytest.fixture(scope="module")
async def target(channel: grpc.aio.Channel, db: Database, database_url: str) -> World:
    return await populate(channel, db, database_url, new_tenant("s"))


async def test_schemathesis_rejections_leave_the_database_unchanged(
    app: App, target: World, snapshots: Snapshotter, channel: grpc.aio.Channel
) -> None:
    await snapshots.refresh()
    loop = asyncio.get_running_loop()
    base = f"http://127.0.0.1:{app.http_port}"
    headers = {"X-Tenant-Id": target.tenant, "X-User-Role": "admin"}
    stats: Counter[str] = Counter()
    changed: list[str] = []
    server_errors: list[str] = []

    def wait(coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout=120)

    def run_all() -> None:
        schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
        operations = [result.ok() for result in schema.get_all_operations()]
        stats["operations"] = len(operations)
        for operation in operations:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                run_operation(operation, mode)

    def run_operation(operation: Any, mode: GenerationMode) -> None:
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy(generation_mode=mode))
        def one(case: Any) -> None:
            wait(snapshots.wait_idle(target.tenant))
            before = wait(snapshots.take(target.tenant))
            response = case.call(base_url=base, headers=headers, timeout=60)
            status = response.status_code
            stats["requests"] += 1
            label = f"{operation.label} [{mode.value}] -> {status}"
            if status >= 500:
                server_errors.append(label)
            elif status >= 400:
                stats["rejected"] += 1
                if wait(snapshots.take(target.tenant)) != before:
                    changed.append(label)
            else:
                wait(settle(channel, snapshots, target))

        try:
            one()
        except Unsatisfiable:
            # Nothing to break (e.g. GET /api/v1/provenance/signing-key has no parameters).
            assert mode is GenerationMode.NEGATIVE, operation.label
            stats["no_negative_data"] += 1

    await asyncio.to_thread(run_all)
    print(f"\nschemathesis: {dict(stats)}, 5xx: {len(server_errors)}, DB changes: {len(changed)}")
    assert stats["operations"] >= len(METHOD_NAMES)  # every RPC (and /healthz)
    assert stats["requests"] >= 20 * 2 and stats["rejected"] >= 20
    assert not server_errors, server_errors[:10]
    assert not changed, changed[:10]
    await assert_healthy(channel)
