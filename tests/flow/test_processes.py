"""Real server processes: SIGKILL mid-run then resume; two processes racing to retry.

Side effects are counted outside the server processes: a counter file (one line
per execution, at-least-once) and rows in flow_test_effect written in the
node's checkpoint transaction (exactly-once with the PostgreSQL store).
"""

from __future__ import annotations

import asyncio
import itertools
import signal
from pathlib import Path

import grpc
import pytest

from kaireon.flow.v1 import flow_pb2, flow_pb2_grpc
from kaireon_server.flow.executor import EXECUTOR_LOST
from kaireon_server.platform.db import Database
from tests.flow.support import counts, definition, node_states, step, wait_finished
from tests.support.server import ServerProcess, metadata

pytestmark = pytest.mark.slow


async def effect_rows(db: Database, tenant: str, run_id: str) -> dict[str, int]:
    async with db.transaction(tenant) as con:
        rows = await con.fetch(
            "SELECT node_id, count(*) AS n FROM flow_test_effect "
            "WHERE tenant_id = $1 AND run_id = $2 GROUP BY node_id",
            tenant,
            run_id,
        )
    return {r["node_id"]: r["n"] for r in rows}


async def checkpointed(db: Database, tenant: str, run_id: str) -> set[str]:
    async with db.transaction(tenant) as con:
        rows = await con.fetch(
            "SELECT node_id FROM flow_run_checkpoint WHERE tenant_id = $1 AND run_id = $2",
            tenant,
            run_id,
        )
    return {r["node_id"] for r in rows}


async def test_sigkill_mid_run_then_retry_finishes_without_rerunning_completed_nodes(
    process_env, servers, db: Database, tenant: str, tmp_path: Path
) -> None:
    counter = tmp_path / "count"
    names = [f"n{i}" for i in range(8)]
    nodes = [step(names[0], sleep=0.3, counter_file=str(counter), db_effect=True)]
    nodes += [
        step(n, prev, sleep=0.3, counter_file=str(counter), db_effect=True)
        for prev, n in itertools.pairwise(names)
    ]
    defn = definition(*nodes)

    first = ServerProcess(process_env).start()
    servers.append(first)
    async with grpc.aio.insecure_channel(first.target) as channel:
        stub = flow_pb2_grpc.FlowRunnerServiceStub(channel)
        await stub.StartRun(
            flow_pb2.StartRunRequest(definition=defn, run_id="k"),
            metadata=metadata(tenant, "operator"),
        )
        while len(await checkpointed(db, tenant, "k")) < 3:
            await asyncio.sleep(0.05)
    first.signal(signal.SIGKILL)
    assert first.wait(10) == -signal.SIGKILL
    done_before = await checkpointed(db, tenant, "k")
    assert 3 <= len(done_before) < len(names)

    second = ServerProcess(process_env).start()
    servers.append(second)
    async with grpc.aio.insecure_channel(second.target) as channel:
        stub = flow_pb2_grpc.FlowRunnerServiceStub(channel)
        # The restarted server's sweep notices the run has no executor.
        orphan = await wait_finished(stub, tenant, "k", timeout=15)
        assert orphan.state == flow_pb2.RUN_STATE_FAILED and orphan.error == EXECUTOR_LOST
        await stub.RetryRun(
            flow_pb2.RetryRunRequest(run_id="k"), metadata=metadata(tenant, "operator")
        )
        final = await wait_finished(stub, tenant, "k")
    assert final.state == flow_pb2.RUN_STATE_SUCCEEDED and final.attempt == 2
    states = node_states(final)
    assert {n for n, s in states.items() if s == "SKIPPED"} == done_before
    assert {n for n, s in states.items() if s == "COMPLETED"} == set(names) - done_before
    executions = counts(counter, "k")
    # No node completed before the kill ran again.
    assert all(executions[n] == 1 for n in done_before)
    assert set(executions) == set(names)
    # Writes made in the checkpoint transaction happened exactly once per node,
    # including the node the kill interrupted (its first write rolled back).
    assert await effect_rows(db, tenant, "k") == dict.fromkeys(names, 1)


async def test_two_processes_retrying_at_once_exactly_one_executes(
    process_env, servers, db: Database, tenant: str, tmp_path: Path
) -> None:
    counter, flag = tmp_path / "count", tmp_path / "fail"
    flag.write_text("")
    defn = definition(
        step("a", counter_file=str(counter)),
        step("b", "a", counter_file=str(counter), fail_flag=str(flag), sleep=1.5),
    )
    one = ServerProcess(process_env).start()
    two = ServerProcess(process_env).start()
    servers += [one, two]
    async with (
        grpc.aio.insecure_channel(one.target) as ch1,
        grpc.aio.insecure_channel(two.target) as ch2,
    ):
        stub1 = flow_pb2_grpc.FlowRunnerServiceStub(ch1)
        stub2 = flow_pb2_grpc.FlowRunnerServiceStub(ch2)
        await stub1.StartRun(
            flow_pb2.StartRunRequest(definition=defn, run_id="race"),
            metadata=metadata(tenant, "operator"),
        )
        assert (await wait_finished(stub1, tenant, "race")).state == flow_pb2.RUN_STATE_FAILED
        flag.unlink()
        request = flow_pb2.RetryRunRequest(run_id="race")
        outcomes = await asyncio.gather(
            stub1.RetryRun(request, metadata=metadata(tenant, "operator")),
            stub2.RetryRun(request, metadata=metadata(tenant, "operator")),
            return_exceptions=True,
        )
        won = [o for o in outcomes if isinstance(o, flow_pb2.RetryRunResponse)]
        lost = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
        assert len(won) == 1 and len(lost) == 1
        assert lost[0].code() == grpc.StatusCode.FAILED_PRECONDITION
        final = await wait_finished(stub2, tenant, "race")
    assert final.state == flow_pb2.RUN_STATE_SUCCEEDED and final.attempt == 2
    assert counts(counter, "race") == {"a": 1, "b": 2}
