"""Shared by the hostile-input tests: which answers count as deliberate, settling, health."""

from __future__ import annotations

import asyncio

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from kaireon.flow.v1 import flow_pb2
from tests.security.conftest import World
from tests.security.rpcs import BY_NAME, call
from tests.security.snapshot import Snapshotter
from tests.support.server import metadata

# A server fault, a lost dependency or a hang, never a judgement on the input.
# RESOURCE_EXHAUSTED too: these requests are below the 16 MiB limit and sent one
# at a time, so it could only be an error answer too big for the client's
# header limit (an error quoting megabytes of input).
NOT_DELIBERATE = frozenset(
    {
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)


async def settle(channel: grpc.aio.Channel, snapshots: Snapshotter, world: World) -> None:
    """After an accepted request: let the tenant's jobs and runs finish (cancel slow runs)."""
    try:
        await snapshots.wait_idle(world.tenant, timeout=10)
        return
    except AssertionError:
        pass
    running = await snapshots.con.fetch(
        "SELECT run_id FROM flow_run WHERE tenant_id = $1 AND state IN ('pending', 'running')",
        world.tenant,
    )
    for row in running:
        await call(
            channel,
            BY_NAME["FlowRunnerService.CancelRun"],
            flow_pb2.CancelRunRequest(run_id=row["run_id"]),
            metadata(world.tenant, "admin"),
        )
    await snapshots.wait_idle(world.tenant, timeout=30)


async def assert_healthy(channel: grpc.aio.Channel, within: float = 20.0) -> None:
    """The server answers health checks and is (again) SERVING within `within` seconds.

    The test server probes the database every 0.5 s with a 0.5 s timeout, so on a
    loaded machine it may report NOT_SERVING for a moment; a crashed or wedged
    server never comes back."""
    stub = health_pb2_grpc.HealthStub(channel)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=10)
        if reply.status == health_pb2.HealthCheckResponse.SERVING:
            return
        assert loop.time() < deadline, f"health still {reply.status} after {within} s"
        await asyncio.sleep(0.2)
