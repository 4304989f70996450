"""A flow run interrupted by a PostgreSQL crash resumes by RetryRun with
nothing half-applied and nothing applied twice.

The cluster is crashed (`pg_ctl stop -m immediate`: no shutdown checkpoint;
checkpoints commit with synchronous_commit off, so the last ones may be lost,
as docs/FLOW.md says) while a run with an in-checkpoint database write per
node is mid-way, then started again. The server, which never restarts, ends
the attempt; RetryRun reuses every checkpoint that survived and the run
succeeds: each node's write exists exactly once, the nodes SKIPPED are exactly
the surviving checkpoints, and the outputs equal an uninterrupted run's.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest

from kaireon.flow.v1 import flow_pb2, flow_pb2_grpc
from kaireon_server.app import App
from kaireon_server.platform.config import Settings
from tests.flow.nodes_for_tests import EFFECT_TABLE
from tests.flow.support import FINISHED, counts, definition, node_states, step
from tests.support.pg_cluster import PostgresCluster
from tests.support.server import base_env, metadata

pytestmark = pytest.mark.slow

NODES = [f"n{i}" for i in range(8)]


def _chain(**config: Any) -> flow_pb2.FlowDefinition:
    nodes = [step(NODES[0], **config)]
    nodes += [step(n, prev, **config) for prev, n in itertools.pairwise(NODES)]
    return definition(*nodes)


@pytest.fixture
async def server(cluster_database: str, signing_key_path: Path) -> AsyncIterator[App]:
    owner = await asyncpg.connect(cluster_database)
    try:
        await owner.execute(EFFECT_TABLE)
    finally:
        await owner.close()
    env = {
        **base_env(cluster_database, COSIGN_KEY=str(signing_key_path)),
        "KAIREON_HTTP_PORT": "off",
        "KAIREON_DB_ACQUIRE_TIMEOUT": "2",
        "KAIREON_FLOW_SWEEP_SECONDS": "0.5",
    }
    app = App(Settings.from_env(env))
    await app.start()
    yield app
    await app.stop(grace=1)


async def _run(stub: flow_pb2_grpc.FlowRunnerServiceStub, tenant: str, run_id: str) -> Any:
    """The run, or None while the database is away."""
    try:
        reply = await stub.GetRun(
            flow_pb2.GetRunRequest(run_id=run_id), metadata=metadata(tenant), timeout=10
        )
    except grpc.aio.AioRpcError as exc:
        if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED):
            return None
        raise
    return reply.run


async def _finished(stub: flow_pb2_grpc.FlowRunnerServiceStub, tenant: str, run_id: str) -> Any:
    async with asyncio.timeout(60):
        while True:
            run = await _run(stub, tenant, run_id)
            if run is not None and run.state in FINISHED:
                return run
            await asyncio.sleep(0.1)


async def _checkpoints(dsn: str, tenant: str, run_id: str) -> dict[str, str]:
    owner = await asyncpg.connect(dsn)
    try:
        rows = await owner.fetch(
            "SELECT node_id, output_digest FROM flow_run_checkpoint "
            "WHERE tenant_id = $1 AND run_id = $2",
            tenant,
            run_id,
        )
    finally:
        await owner.close()
    return {r["node_id"]: r["output_digest"] for r in rows}


async def test_a_run_interrupted_by_a_database_crash_resumes_exactly_once(
    server: App, cluster: PostgresCluster, cluster_database: str, tenant: str, tmp_path: Path
) -> None:
    counter = tmp_path / "count"
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        stub = flow_pb2_grpc.FlowRunnerServiceStub(channel)
        await stub.StartRun(
            flow_pb2.StartRunRequest(
                definition=_chain(sleep=0.3, counter_file=str(counter), db_effect=True),
                run_id="crash",
            ),
            metadata=metadata(tenant, "operator"),
        )
        async with asyncio.timeout(30):
            while len(await _checkpoints(cluster_database, tenant, "crash")) < 3:
                await asyncio.sleep(0.02)
        seen_before = set(await _checkpoints(cluster_database, tenant, "crash"))
        await asyncio.to_thread(cluster.stop, "immediate")
        await asyncio.sleep(1.0)
        await asyncio.to_thread(cluster.start)

        interrupted = await _finished(stub, tenant, "crash")
        assert interrupted.state == flow_pb2.RUN_STATE_FAILED, interrupted
        survived = set(await _checkpoints(cluster_database, tenant, "crash"))
        await stub.RetryRun(
            flow_pb2.RetryRunRequest(run_id="crash"), metadata=metadata(tenant, "operator")
        )
        final = await _finished(stub, tenant, "crash")
        await stub.StartRun(
            flow_pb2.StartRunRequest(definition=_chain(), run_id="reference"),
            metadata=metadata(tenant, "operator"),
        )
        reference = await _finished(stub, tenant, "reference")

    assert final.state == flow_pb2.RUN_STATE_SUCCEEDED and final.attempt == 2, final
    assert reference.state == flow_pb2.RUN_STATE_SUCCEEDED
    # A checkpoint lost in the crash is lost whole and in order: a prefix survives.
    assert survived == set(NODES[: len(survived)]), survived
    states = node_states(final)
    assert {n for n, s in states.items() if s == "SKIPPED"} == survived
    assert {n for n, s in states.items() if s == "COMPLETED"} == set(NODES) - survived
    owner = await asyncpg.connect(cluster_database)
    try:
        rows = await owner.fetch(
            "SELECT node_id, count(*) AS n FROM flow_test_effect "
            "WHERE tenant_id = $1 AND run_id = 'crash' GROUP BY node_id",
            tenant,
        )
    finally:
        await owner.close()
    assert {r["node_id"]: r["n"] for r in rows} == dict.fromkeys(NODES, 1)
    assert await _checkpoints(cluster_database, tenant, "crash") == await _checkpoints(
        cluster_database, tenant, "reference"
    )
    executions = counts(counter, "crash")
    assert all(executions[n] == 1 for n in survived)
    print(
        f"\nFIGURE flow database crash: {len(NODES)} nodes, {len(seen_before)} checkpoints "
        f"seen before the crash, {len(survived)} survived it (lost {len(seen_before - survived)}),"
        f" reused as SKIPPED on retry; in-checkpoint writes exactly once "
        f"({len(rows)}/{len(NODES)}); interrupted attempt ended "
        f"{flow_pb2.RunState.Name(interrupted.state)} ({interrupted.error!r})"
    )
