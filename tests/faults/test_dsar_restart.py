"""A DSAR export completes exactly once when PostgreSQL restarts under it.

The database is a cluster of the test's own (tests/support/pg_cluster.py),
restarted for real with pg_ctl while an export is mid-way: cleanly (`fast`:
every session is terminated) or as a crash (`immediate`: no shutdown
checkpoint, WAL recovery on start). Two server processes' worth of workers
(in-process servers) compete for the job. Afterwards: one completed request,
the chunks of exactly one attempt stored (contiguous, no duplicates), one
completion audit row, the digest equal to the stored bytes and to the
download, and the interrupted attempt counted.

A worker process SIGKILLed mid-export is tests/dsar/test_jobs.py::
test_a_worker_process_killed_mid_export_is_replaced_and_one_export_remains.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest

from kaireon.dsar.v1 import dsar_pb2, dsar_pb2_grpc
from kaireon_server.app import App
from kaireon_server.demo.seed import SeedSize, seed_tenant
from kaireon_server.platform.config import Settings
from tests.dsar.conftest import add_interactions, assert_canonical
from tests.support.pg_cluster import PostgresCluster
from tests.support.server import base_env, metadata

pytestmark = pytest.mark.slow

ROWS = 2000  # about 400 KB of export: 100 chunks of 4 KiB, 40 ms apart
WORKER = {
    "KAIREON_HTTP_PORT": "off",
    "KAIREON_DSAR_WORKERS": "1",
    "KAIREON_DSAR_CHUNK_BYTES": "4096",
    "KAIREON_DSAR_THROTTLE_MS": "40",
    "KAIREON_DSAR_LEASE_SECONDS": "2",
    "KAIREON_DSAR_HEARTBEAT_SECONDS": "0.4",
    "KAIREON_DSAR_POLL_SECONDS": "0.2",
    "KAIREON_DSAR_RETRY_BASE_SECONDS": "0.2",
    "KAIREON_DB_ACQUIRE_TIMEOUT": "2",
    "KAIREON_HEALTH_INTERVAL": "0.5",
}


@pytest.fixture
async def cluster_servers(
    cluster_database: str, signing_key_path: Path
) -> AsyncIterator[Callable[[], Awaitable[App]]]:
    started: list[App] = []

    async def start() -> App:
        env = {**base_env(cluster_database, COSIGN_KEY=str(signing_key_path)), **WORKER}
        app = App(Settings.from_env(env))
        await app.start()
        started.append(app)
        return app

    yield start
    for app in reversed(started):
        await app.stop(grace=1)


async def _get(stub: dsar_pb2_grpc.DsarServiceStub, tenant: str, request_id: str) -> Any:
    """The request's state; None while the database is away (UNAVAILABLE)."""
    try:
        reply = await stub.GetDsarRequest(
            dsar_pb2.GetDsarRequestRequest(id=request_id),
            metadata=metadata(tenant, "operator"),
            timeout=10,
        )
    except grpc.aio.AioRpcError as exc:
        if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED):
            return None
        raise
    return reply.request


async def _download(stub: dsar_pb2_grpc.DsarServiceStub, tenant: str, request_id: str) -> bytes:
    parts = []
    async for item in stub.StreamDsarExport(
        dsar_pb2.StreamDsarExportRequest(id=request_id), metadata=metadata(tenant, "operator")
    ):
        parts.append(item.chunk.data)
    return b"".join(parts)


@pytest.mark.parametrize("mode", ["fast", "immediate"])
async def test_an_export_completes_exactly_once_across_a_database_restart(
    cluster: PostgresCluster, cluster_database: str, cluster_servers, tenant: str, mode: str
) -> None:
    first = await cluster_servers()
    await cluster_servers()  # a second worker, competing for the job
    assert first.db is not None
    await seed_tenant(first.db, tenant, SeedSize(customers=2, interactions_per_customer=5))
    await add_interactions(first.db, tenant, "cust_00001", ROWS)
    loop = asyncio.get_running_loop()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{first.grpc_port}") as channel:
        stub = dsar_pb2_grpc.DsarServiceStub(channel)
        created = await stub.CreateDsarRequest(
            dsar_pb2.CreateDsarRequestRequest(request_type="export", subject_id="cust_00001"),
            metadata=metadata(tenant, "operator"),
        )
        request_id = created.request.id
        async with asyncio.timeout(60):
            while True:
                state = await _get(stub, tenant, request_id)
                if state is None:  # a busy machine: the pool answered UNAVAILABLE
                    await asyncio.sleep(0.05)
                    continue
                assert state.status in ("pending", "processing"), state
                if state.status == "processing" and state.progress >= 10:
                    break
                await asyncio.sleep(0.05)
        interrupted_at = state.progress

        down = loop.time()
        await asyncio.to_thread(cluster.stop, mode)
        await asyncio.sleep(1.0)  # down for a while: calls fail, workers retry
        await asyncio.to_thread(cluster.start)
        downtime = loop.time() - down

        async with asyncio.timeout(120):
            while True:
                state = await _get(stub, tenant, request_id)
                if state is not None and state.status in ("completed", "failed"):
                    break
                await asyncio.sleep(0.1)
        recovered_in = loop.time() - down - downtime
        assert state.status == "completed", state.error
        document = await _download(stub, tenant, request_id)

    # The interrupted attempt is counted; the completed one is a later attempt.
    assert state.attempts >= 2, state
    assert state.error == ""
    owner = await asyncpg.connect(cluster_database)
    try:
        chunks = await owner.fetch(
            "SELECT attempt, seq, data FROM dsar_export_chunk "
            "WHERE tenant_id = $1 AND request_id = $2::uuid ORDER BY attempt, seq",
            tenant,
            request_id,
        )
        row = await owner.fetchrow(
            "SELECT export_attempt, export_chunks, export_digest, attempts FROM dsar_request "
            "WHERE tenant_id = $1 AND id = $2::uuid",
            tenant,
            request_id,
        )
        completions = await owner.fetchval(
            "SELECT count(*) FROM audit_log WHERE tenant_id = $1 AND entity_id = $2 "
            "AND action = 'dsar_export_completed'",
            tenant,
            request_id,
        )
        history = await owner.fetch(
            "SELECT status, error FROM dsar_request_event "
            "WHERE tenant_id = $1 AND request_id = $2::uuid ORDER BY version",
            tenant,
            request_id,
        )
    finally:
        await owner.close()
    # Exactly one attempt's chunks, 0..n-1 once each, and they are the export.
    assert {c["attempt"] for c in chunks} == {row["export_attempt"]} == {state.attempts}
    assert [c["seq"] for c in chunks] == list(range(row["export_chunks"]))
    stored = b"".join(bytes(c["data"]) for c in chunks)
    assert hashlib.sha256(stored).hexdigest() == row["export_digest"] == state.export_digest_sha256
    assert document == stored
    assert assert_canonical(document)["counts"]["interactions"] == ROWS + 5
    assert completions == 1
    statuses = [h["status"] for h in history]
    assert statuses.count("completed") == 1 and statuses[-1] == "completed"
    # The job went back to the queue at least once (a retry, or a lease taken over).
    assert statuses.count("processing") >= 2 or any(
        (h["error"] or "").startswith("retrying: ") for h in history
    ), history
    print(
        f"\nFIGURE dsar restart ({mode}): interrupted at {interrupted_at}%, database down "
        f"{downtime:.1f}s, completed {recovered_in:.1f}s after it returned, attempts "
        f"{state.attempts}, completed exports 1, chunks {len(chunks)} (one attempt), "
        f"digest matches, data lost = 0"
    )
