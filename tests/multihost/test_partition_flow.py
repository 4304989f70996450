"""A replica silently cut off from PostgreSQL (nft DROP) while it executes a
flow run: PostgreSQL ends its sessions, and with them the run's session
advisory lock, within a bounded time (tcp_keepalives_* / tcp_user_timeout,
docs/SCALING.md); another replica's sweep ends the orphaned attempt; RetryRun
through another replica resumes from the checkpoints; and no node's database
write is applied twice, even after the cut-off replica is healed."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import asyncpg
import grpc
import pytest

from kaireon.flow.v1 import flow_pb2, flow_pb2_grpc
from kaireon_server.flow.executor import EXECUTOR_LOST
from kaireon_server.flow.locks import lock_key
from tests.flow.conftest import PLUGIN_DIR
from tests.flow.nodes_for_tests import EFFECT_TABLE
from tests.flow.support import FINISHED, counts, definition, node_states, step
from tests.support.netns import Lab, LabPostgres, wait_serving
from tests.support.server import bearer

pytestmark = pytest.mark.slow

NODES = [f"n{i}" for i in range(8)]
LOCK_GONE_WITHIN = 60.0  # measured 29 s: keepalives 10 s + 3 x 5 s, tcp_user_timeout 30 s


async def lock_holders(owner: asyncpg.Connection, tenant: str, run_id: str) -> list[str]:
    """Addresses of the sessions holding this run's advisory lock. Only its key:
    other advisory locks come and go (the audit log's integrator takes one per
    tenant in a transaction on whichever replica appended last)."""
    key = lock_key(tenant, run_id)
    # A bigint advisory key shows in pg_locks as (classid, objid) = (high, low) 32 bits.
    rows = await owner.fetch(
        "SELECT host(a.client_addr) AS addr FROM pg_locks l "
        "JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE l.locktype = 'advisory' AND l.granted AND a.client_addr IS NOT NULL "
        "AND l.objsubid = 1 AND l.classid = $1::bigint::oid AND l.objid = $2::bigint::oid",
        (key >> 32) & 0xFFFFFFFF,
        key & 0xFFFFFFFF,
    )
    return [r["addr"] for r in rows]


async def wait_finished(
    stub: flow_pb2_grpc.FlowRunnerServiceStub, tenant: str, run_id: str, timeout: float
) -> flow_pb2.Run:
    async with asyncio.timeout(timeout):
        while True:
            reply = await stub.GetRun(
                flow_pb2.GetRunRequest(run_id=run_id), metadata=bearer(tenant, "viewer"), timeout=10
            )
            if reply.run.state in FINISHED:
                return reply.run
            await asyncio.sleep(0.1)


async def test_a_partitioned_executor_loses_its_lock_and_the_run_resumes_elsewhere(
    lab: Lab, lab_pg: LabPostgres, lab_env: dict[str, str], tenant: str, tmp_path: Path
) -> None:
    counter = tmp_path / "count"
    counter.touch()
    counter.chmod(0o666)
    env = {
        **lab_env,
        "PYTHONPATH": os.pathsep.join(
            p for p in (str(PLUGIN_DIR), os.environ.get("PYTHONPATH", "")) if p
        ),
        "KAIREON_FLOW_SWEEP_SECONDS": "0.5",
        "KAIREON_DB_STATEMENT_TIMEOUT_MS": "5000",
        "KAIREON_DB_ACQUIRE_TIMEOUT": "2",
    }
    dsn = lab_pg.tcp_dsn("postgres")
    replicas = [lab.replica(dsn, **env) for _ in range(3)]
    for replica in replicas:
        await asyncio.to_thread(replica.start)
    for replica in replicas:
        await wait_serving(replica)
    lb = lab.nginx(replicas)
    owner = await asyncpg.connect(lab_pg.dsn())
    try:
        await owner.execute(EFFECT_TABLE)
        await owner.execute("GRANT SELECT, INSERT ON flow_test_effect TO kaireon_app")
        chain = [
            step(
                node,
                *([NODES[i - 1]] if i else []),
                sleep=0.5,
                counter_file=str(counter),
                db_effect=True,
            )
            for i, node in enumerate(NODES)
        ]
        async with grpc.aio.insecure_channel(lb.grpc_target) as channel:
            stub = flow_pb2_grpc.FlowRunnerServiceStub(channel)
            await stub.StartRun(
                flow_pb2.StartRunRequest(definition=definition(*chain), run_id="p"),
                metadata=bearer(tenant, "operator"),
                timeout=10,
            )

        async def checkpoints() -> set[str]:
            rows = await owner.fetch(
                "SELECT node_id FROM flow_run_checkpoint WHERE tenant_id = $1 AND run_id = 'p'",
                tenant,
            )
            return {r["node_id"] for r in rows}

        async with asyncio.timeout(30):
            while len(await checkpoints()) < 3:
                await asyncio.sleep(0.02)
        holders = await lock_holders(owner, tenant, "p")
        assert len(holders) == 1, holders
        executor = next(r for r in replicas if r.host.address == holders[0])
        others = [r for r in replicas if r is not executor]

        cut = time.monotonic()
        lab.partition(executor.host, lab_pg.host)
        done_at_cut = await checkpoints()
        async with asyncio.timeout(LOCK_GONE_WITHIN + 30):
            while await lock_holders(owner, tenant, "p"):
                await asyncio.sleep(0.2)
        lock_gone_in = time.monotonic() - cut
        assert lock_gone_in < LOCK_GONE_WITHIN

        # Another replica's sweep ends the orphaned attempt; retry through it.
        async with grpc.aio.insecure_channel(others[0].target) as channel:
            stub = flow_pb2_grpc.FlowRunnerServiceStub(channel)
            orphan = await wait_finished(stub, tenant, "p", timeout=30)
            assert orphan.state == flow_pb2.RUN_STATE_FAILED, orphan
            assert orphan.error == EXECUTOR_LOST
            done_before_retry = await checkpoints()
            await stub.RetryRun(
                flow_pb2.RetryRunRequest(run_id="p"), metadata=bearer(tenant, "operator")
            )
            final = await wait_finished(stub, tenant, "p", timeout=60)
        recovered_in = time.monotonic() - cut

        # Heal: the cut-off executor's queued writes may arrive now; they must not count.
        lab.heal(executor.host)
        await wait_serving(executor)
        await asyncio.sleep(3)
        effects = {
            r["node_id"]: r["n"]
            for r in await owner.fetch(
                "SELECT node_id, count(*) AS n FROM flow_test_effect "
                "WHERE tenant_id = $1 AND run_id = 'p' GROUP BY node_id",
                tenant,
            )
        }
        run_row = await owner.fetchrow(
            "SELECT state, attempt FROM flow_run WHERE tenant_id = $1 AND run_id = 'p'", tenant
        )
    finally:
        await owner.close()

    assert final.state == flow_pb2.RUN_STATE_SUCCEEDED and final.attempt == 2, final
    assert run_row is not None and run_row["attempt"] == 2
    states = node_states(final)
    # Checkpointed before the retry: reused, not run again by attempt 2.
    assert done_at_cut <= done_before_retry
    assert {n for n, s in states.items() if s == "SKIPPED"} == done_before_retry
    assert {n for n, s in states.items() if s == "COMPLETED"} == set(NODES) - done_before_retry
    # Each node's in-checkpoint write applied exactly once across both replicas.
    assert effects == dict.fromkeys(NODES, 1), effects
    executions = counts(counter, "p")
    for node in done_at_cut:
        assert executions[node] == 1, (node, executions)
    print(
        f"\nFIGURE flow executor partitioned (nft DROP): advisory lock released by PostgreSQL "
        f"{lock_gone_in:.1f}s after the cut, run finished on another replica "
        f"{recovered_in:.1f}s after it (attempt 2, {len(done_before_retry)} of {len(NODES)} "
        f"nodes reused), node writes exactly once ({sum(effects.values())}/{len(NODES)})"
    )
