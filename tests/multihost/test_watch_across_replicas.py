"""Watches follow work done on another replica (LISTEN/NOTIFY through
PostgreSQL), and survive the death of the replica serving them: the stream
ends with UNAVAILABLE, and the client's new watch through nginx (tried again if
it cannot start), answered by another replica, starts from a snapshot that already holds everything seen and
follows the run to its end."""

from __future__ import annotations

import asyncio
import os
import signal

import asyncpg
import grpc
import pytest

from kaireon.flow.v1 import flow_pb2, flow_pb2_grpc
from tests.flow.conftest import PLUGIN_DIR
from tests.flow.support import definition, step
from tests.multihost.test_partition_flow import lock_holders
from tests.support.netns import Lab, LabPostgres, wait_serving
from tests.support.server import bearer

pytestmark = pytest.mark.slow

NODES = [f"n{i}" for i in range(10)]
COMPLETED = flow_pb2.RUN_EVENT_TYPE_NODE_COMPLETED


async def test_a_watch_follows_another_replica_and_survives_its_own_replica(
    lab: Lab, lab_pg: LabPostgres, lab_env: dict[str, str], tenant: str
) -> None:
    env = {
        **lab_env,
        "PYTHONPATH": os.pathsep.join(
            p for p in (str(PLUGIN_DIR), os.environ.get("PYTHONPATH", "")) if p
        ),
    }
    replicas = [lab.replica(lab_pg.tcp_dsn("postgres"), **env) for _ in range(3)]
    for replica in replicas:
        await asyncio.to_thread(replica.start)
    for replica in replicas:
        await wait_serving(replica)
    lb = lab.nginx(replicas)
    chain = [step(n, *([NODES[i - 1]] if i else []), sleep=0.4) for i, n in enumerate(NODES)]
    viewer = bearer(tenant, "viewer")
    owner = await asyncpg.connect(lab_pg.dsn())
    try:
        async with grpc.aio.insecure_channel(lb.grpc_target) as channel:
            await flow_pb2_grpc.FlowRunnerServiceStub(channel).StartRun(
                flow_pb2.StartRunRequest(definition=definition(*chain), run_id="w"),
                metadata=bearer(tenant, "operator"),
                timeout=10,
            )
        async with asyncio.timeout(15):
            while not (holders := await lock_holders(owner, tenant, "w")):
                await asyncio.sleep(0.05)
    finally:
        await owner.close()
    executor = next(r for r in replicas if r.host.address == holders[0])
    watcher = next(r for r in replicas if r is not executor)

    # 1. A watch on a replica that does not execute the run sees its nodes complete.
    first: list[flow_pb2.WatchRunResponse] = []
    async with grpc.aio.insecure_channel(watcher.target) as channel:
        stream = flow_pb2_grpc.FlowRunnerServiceStub(channel).WatchRun(
            flow_pb2.WatchRunRequest(run_id="w"), metadata=viewer
        )
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            async with asyncio.timeout(30):
                async for event in stream:
                    first.append(event)
                    if sum(e.type == COMPLETED for e in first) == 2:
                        # 2. The watch's own replica dies mid-stream.
                        watcher.signal(signal.SIGKILL)
        assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
    assert first[0].type == flow_pb2.RUN_EVENT_TYPE_SNAPSHOT
    seen = {e.node_id for e in first if e.type == COMPLETED}
    assert len(seen) >= 2

    # 3. Resumed through the balancer: another replica answers. A watch that cannot
    # start is tried again, as a resuming client does: nginx may still hand it to
    # a kept-alive connection of the dead replica (502, UNAVAILABLE; a gRPC call is
    # not retried by nginx once sent).
    second: list[flow_pb2.WatchRunResponse] = []
    refused = 0
    async with grpc.aio.insecure_channel(lb.grpc_target) as channel:
        stub = flow_pb2_grpc.FlowRunnerServiceStub(channel)
        async with asyncio.timeout(60):
            while not second:
                try:
                    async for event in stub.WatchRun(
                        flow_pb2.WatchRunRequest(run_id="w"), metadata=viewer
                    ):
                        second.append(event)
                        if event.type == flow_pb2.RUN_EVENT_TYPE_RUN_FINISHED:
                            break
                except grpc.aio.AioRpcError as exc:
                    if second or exc.code() != grpc.StatusCode.UNAVAILABLE or refused >= 3:
                        raise
                    refused += 1
                    await asyncio.sleep(0.2)
    snapshot = second[0]
    assert snapshot.type == flow_pb2.RUN_EVENT_TYPE_SNAPSHOT
    done_in_snapshot = {
        n.node_id for n in snapshot.run.nodes if n.state == flow_pb2.NODE_STATE_COMPLETED
    }
    assert seen <= done_in_snapshot  # nothing seen is lost
    later = {e.node_id for e in second if e.type == COMPLETED}
    assert done_in_snapshot | later == set(NODES)
    seqs = [e.seq for e in second[1:]]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert second[-1].run.state == flow_pb2.RUN_STATE_SUCCEEDED
    print(
        f"\nFIGURE watch across replicas: {len(seen)} node completions seen on a non-executing "
        f"replica before it was killed, resumed through nginx with {len(done_in_snapshot)} "
        f"in the snapshot and {len(later)} more streamed to RUN_FINISHED "
        f"({refused} start(s) refused by the dead replica first)"
    )
