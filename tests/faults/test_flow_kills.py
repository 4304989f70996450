"""A flow run survives repeated SIGKILLs of its server, with parallel branches.

tests/flow/test_processes.py kills a linear run once and retries it. This adds
a fan-out/fan-in DAG (a -> b1..b4 -> c1..c4 -> d, the b and c branches running
concurrently) killed twice, each time with several nodes in flight, resumed by
RetryRun on a fresh process each time. Proven: the run succeeds on attempt 3;
no node checkpointed before a kill runs again after it (its checkpoint is
reused, SKIPPED); the in-checkpoint database write of every node happened
exactly once; and every node's output equals that of an uninterrupted run of
the same DAG, so reloaded checkpoint outputs fed their dependents correctly.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import asyncpg
import grpc
import pytest

from kaireon.flow.v1 import flow_pb2, flow_pb2_grpc
from kaireon_server.flow.executor import EXECUTOR_LOST
from tests.flow.support import counts, definition, node_states, step, wait_finished
from tests.support.server import ServerProcess, metadata

pytestmark = pytest.mark.slow

BRANCHES = 4
NODES = ["a", *(f"b{i}" for i in range(BRANCHES)), *(f"c{i}" for i in range(BRANCHES)), "d"]


def _dag(slow: bool, **config: object) -> flow_pb2.FlowDefinition:
    """Branch i's b node takes 0.3 s more than branch i-1's, so checkpoints land
    one at a time and a kill always finds nodes of other branches in flight."""

    def sleep(i: int = 0) -> dict[str, object]:
        return {"sleep": 0.3 * (1 + i)} if slow else {}

    nodes = [step("a", **config, **sleep())]
    for i in range(BRANCHES):
        nodes.append(step(f"b{i}", "a", **config, **sleep(i)))
        nodes.append(step(f"c{i}", f"b{i}", **config, **sleep()))
    nodes.append(step("d", *(f"c{i}" for i in range(BRANCHES)), **config, **sleep()))
    return definition(*nodes)


async def _checkpoints(owner: asyncpg.Connection, tenant: str, run_id: str) -> dict[str, str]:
    rows = await owner.fetch(
        "SELECT node_id, output_digest FROM flow_run_checkpoint WHERE tenant_id = $1 AND run_id = $2",
        tenant,
        run_id,
    )
    return {r["node_id"]: r["output_digest"] for r in rows}


async def _effects(owner: asyncpg.Connection, tenant: str, run_id: str) -> dict[str, int]:
    rows = await owner.fetch(
        "SELECT node_id, count(*) AS n FROM flow_test_effect "
        "WHERE tenant_id = $1 AND run_id = $2 GROUP BY node_id",
        tenant,
        run_id,
    )
    return {r["node_id"]: r["n"] for r in rows}


async def test_a_parallel_run_killed_twice_resumes_from_its_checkpoints(
    process_env, servers, database_url: str, tenant: str, tmp_path: Path
) -> None:
    counter = tmp_path / "count"
    defn = _dag(True, counter_file=str(counter), db_effect=True)
    owner = await asyncpg.connect(database_url)
    done_before_kill: list[set[str]] = []
    try:
        # Kill 1 with a, b0, b1 checkpointed; kill 2 with seven nodes checkpointed.
        for attempt, enough in ((1, 3), (2, 7)):
            server = ServerProcess(process_env).start()
            servers.append(server)
            async with grpc.aio.insecure_channel(server.target) as channel:
                stub = flow_pb2_grpc.FlowRunnerServiceStub(channel)
                if attempt == 1:
                    await stub.StartRun(
                        flow_pb2.StartRunRequest(definition=defn, run_id="k"),
                        metadata=metadata(tenant, "operator"),
                    )
                else:
                    # The new process's sweep ends the orphaned attempt; retry it.
                    orphan = await wait_finished(stub, tenant, "k", timeout=15)
                    assert orphan.state == flow_pb2.RUN_STATE_FAILED
                    assert orphan.error == EXECUTOR_LOST
                    await stub.RetryRun(
                        flow_pb2.RetryRunRequest(run_id="k"), metadata=metadata(tenant, "operator")
                    )
                async with asyncio.timeout(30):
                    while len(await _checkpoints(owner, tenant, "k")) < enough:
                        await asyncio.sleep(0.02)
            server.signal(signal.SIGKILL)
            assert server.wait(10) == -signal.SIGKILL
            done_before_kill.append(set(await _checkpoints(owner, tenant, "k")))
            assert len(done_before_kill[-1]) < len(NODES)

        last = ServerProcess(process_env).start()
        servers.append(last)
        async with grpc.aio.insecure_channel(last.target) as channel:
            stub = flow_pb2_grpc.FlowRunnerServiceStub(channel)
            orphan = await wait_finished(stub, tenant, "k", timeout=15)
            assert orphan.error == EXECUTOR_LOST
            await stub.RetryRun(
                flow_pb2.RetryRunRequest(run_id="k"), metadata=metadata(tenant, "operator")
            )
            final = await wait_finished(stub, tenant, "k", timeout=60)
            # The same DAG uninterrupted, for its outputs.
            await stub.StartRun(
                flow_pb2.StartRunRequest(definition=_dag(False), run_id="reference"),
                metadata=metadata(tenant, "operator"),
            )
            reference = await wait_finished(stub, tenant, "reference")
        resumed = await _checkpoints(owner, tenant, "k")
        expected = await _checkpoints(owner, tenant, "reference")
        effects = await _effects(owner, tenant, "k")
    finally:
        await owner.close()

    assert final.state == flow_pb2.RUN_STATE_SUCCEEDED and final.attempt == 3, final
    assert reference.state == flow_pb2.RUN_STATE_SUCCEEDED
    states = node_states(final)
    assert {n for n, s in states.items() if s == "SKIPPED"} == done_before_kill[-1]
    assert {n for n, s in states.items() if s == "COMPLETED"} == set(NODES) - done_before_kill[-1]
    # Checkpoints only grow across kills: nothing checkpointed was redone.
    assert done_before_kill[0] <= done_before_kill[1]
    executions = counts(counter, "k")
    assert set(executions) == set(NODES)
    for node in done_before_kill[0]:
        assert executions[node] == 1, (node, executions)
    for node in done_before_kill[1] - done_before_kill[0]:
        assert executions[node] <= 2, (node, executions)  # at most its interrupted try
    # The write made in each node's checkpoint transaction: exactly once, all nodes.
    assert effects == dict.fromkeys(NODES, 1)
    # Outputs (digests of canonical JSON) equal an uninterrupted run's.
    assert resumed == expected
    reruns = sum(executions.values()) - len(NODES)
    print(
        f"\nFIGURE flow kills: {len(NODES)} nodes ({BRANCHES} parallel branches), 2 SIGKILLs, "
        f"checkpoints at the kills {len(done_before_kill[0])} then {len(done_before_kill[1])}, "
        f"{len(done_before_kill[-1])} reused as SKIPPED on attempt 3, {reruns} interrupted "
        f"node(s) re-executed, in-checkpoint writes exactly once ({sum(effects.values())}/"
        f"{len(NODES)}), outputs equal to an uninterrupted run"
    )
