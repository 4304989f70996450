"""A rolling restart of every replica behind nginx under steady load loses no
call: each replica is taken out of the balancer (reload), drained (SIGTERM,
KAIREON_SHUTDOWN_GRACE), started again, and put back once its health says
SERVING; the order a Kubernetes rollout follows (deploy/kubernetes/)."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from kaireon.flow.v1 import flow_pb2, flow_pb2_grpc
from tests.support.netns import Lab, LabPostgres, LabServer
from tests.support.server import bearer

pytestmark = pytest.mark.slow

RATE = 20  # calls per second, half gRPC and half REST


async def wait_serving(server: LabServer, timeout: float = 60.0) -> None:
    async with grpc.aio.insecure_channel(server.target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        async with asyncio.timeout(timeout):
            while True:
                try:
                    reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.aio.AioRpcError:
                    pass
                await asyncio.sleep(0.2)


async def test_rolling_restart_behind_nginx_fails_no_call(
    lab: Lab, lab_pg: LabPostgres, lab_env: dict[str, str], tenant: str
) -> None:
    dsn = lab_pg.tcp_dsn("postgres")
    replicas = [lab.replica(dsn, KAIREON_SHUTDOWN_GRACE="10", **lab_env) for _ in range(3)]
    for replica in replicas:  # one at a time: the first migrates
        await asyncio.to_thread(replica.start)
    for replica in replicas:
        await wait_serving(replica)
    lb = lab.nginx(replicas)

    auth = bearer(tenant, "viewer")
    stop = asyncio.Event()
    outcomes: dict[str, list[str]] = {"grpc": [], "rest": []}
    latencies: list[float] = []

    async with (
        grpc.aio.insecure_channel(lb.grpc_target) as channel,
        aiohttp.ClientSession(headers=dict(auth)) as http,
    ):
        stub = flow_pb2_grpc.FlowRunnerServiceStub(channel)

        async def grpc_call() -> None:
            started = time.monotonic()
            try:
                await stub.ListRuns(flow_pb2.ListRunsRequest(), metadata=auth, timeout=10)
                outcomes["grpc"].append("OK")
            except grpc.aio.AioRpcError as exc:
                outcomes["grpc"].append(f"{exc.code().name}: {exc.details()}")
            latencies.append(time.monotonic() - started)

        async def rest_call() -> None:
            started = time.monotonic()
            try:
                async with http.get(
                    f"{lb.rest}/api/v1/flow/runs", timeout=aiohttp.ClientTimeout(total=10)
                ) as response:
                    await response.read()
                    outcomes["rest"].append(str(response.status))
            except (aiohttp.ClientError, TimeoutError) as exc:
                outcomes["rest"].append(type(exc).__name__)
            latencies.append(time.monotonic() - started)

        async def load() -> None:
            # Open loop: a call every 1/RATE s whatever the previous ones do.
            tasks: set[asyncio.Task[None]] = set()
            n = 0
            while not stop.is_set():
                task = asyncio.create_task(grpc_call() if n % 2 == 0 else rest_call())
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                n += 1
                await asyncio.sleep(1 / RATE)
            await asyncio.gather(*tasks)

        generator = asyncio.create_task(load())
        await asyncio.sleep(2)  # steady state before the first restart
        began = time.monotonic()
        for index, replica in enumerate(replicas):
            others = [r for j, r in enumerate(replicas) if j != index]
            lb.reload(others)
            await asyncio.sleep(1.5)  # nginx's old workers finish what they carry
            code = await asyncio.to_thread(replica.stop)
            assert code == 0, replica.log_lines[-20:]
            await asyncio.to_thread(replica.start)
            await wait_serving(replica)
            lb.reload(replicas)
            await asyncio.sleep(1.5)
        rollout = time.monotonic() - began
        await asyncio.sleep(2)  # and steady afterwards
        stop.set()
        await generator

    total = len(outcomes["grpc"]) + len(outcomes["rest"])
    failed = [o for o in outcomes["grpc"] if o != "OK"] + [
        o for o in outcomes["rest"] if o != "200"
    ]
    assert total >= RATE * (rollout + 4) * 0.5, total
    assert failed == [], (
        f"{len(failed)} of {total} calls failed: {sorted(set(failed))}\n{lb.error_log()}"
    )
    # Every replica served calls (and so came back into the balancer).
    used = lb.upstreams_used()
    for replica in replicas:
        assert used.get(f"{replica.host.address}:50051", 0) > 0, used
        assert used.get(f"{replica.host.address}:8080", 0) > 0, used
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99) - 1]
    print(
        f"\nFIGURE rolling restart of 3 replicas behind nginx: {total} calls at {RATE}/s "
        f"(gRPC and REST), rollout {rollout:.1f}s, failed 0, p50 "
        f"{latencies[len(latencies) // 2] * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms"
    )
