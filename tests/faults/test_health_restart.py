"""The health service follows a real PostgreSQL stop and start.

tests/platform/test_health.py flips health through the proxy (connections
refused). Here the server's own PostgreSQL cluster is stopped with pg_ctl —
cleanly (`fast`) or as a crash (`immediate`) — and started again: health goes
NOT_SERVING (overall and per service), a Watch stream sees the flip both ways,
calls fail fast with UNAVAILABLE meanwhile, and the same server process serves
again once the database is back, without a restart.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from kaireon.audit.v1 import audit_pb2, audit_pb2_grpc
from kaireon_server.app import App
from kaireon_server.platform.config import Settings
from tests.faults.calls import error_reason
from tests.support.pg_cluster import PostgresCluster
from tests.support.server import base_env, metadata

pytestmark = (
    pytest.mark.slow
)  # pg_ctl; the cluster is the tests' own, whatever the suite's database

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
INTERVAL = 0.2  # KAIREON_HEALTH_INTERVAL


@pytest.fixture
async def server(cluster_database: str, signing_key_path: Path) -> AsyncIterator[App]:
    env = {
        **base_env(cluster_database, COSIGN_KEY=str(signing_key_path)),
        "KAIREON_HTTP_PORT": "off",
        "KAIREON_HEALTH_INTERVAL": str(INTERVAL),
        "KAIREON_DB_ACQUIRE_TIMEOUT": "1",
    }
    app = App(Settings.from_env(env))
    await app.start()
    yield app
    await app.stop(grace=1)


async def _status(stub: health_pb2_grpc.HealthStub, service: str = "") -> int:
    reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    return int(reply.status)


async def _until(stub: health_pb2_grpc.HealthStub, wanted: int, service: str = "") -> float:
    """Seconds until health reports `wanted`."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with asyncio.timeout(20):
        while await _status(stub, service) != wanted:
            await asyncio.sleep(0.05)
    return loop.time() - started


@pytest.mark.parametrize("mode", ["fast", "immediate"])
async def test_health_follows_a_real_database_stop_and_start(
    server: App, cluster: PostgresCluster, tenant: str, mode: str
) -> None:
    loop = asyncio.get_running_loop()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        audit = audit_pb2_grpc.AuditServiceStub(channel)
        assert await _status(health) == SERVING
        watched: list[int] = []
        watch = health.Watch(health_pb2.HealthCheckRequest(service=""))

        async def follow() -> None:
            async for reply in watch:
                watched.append(int(reply.status))

        follower = asyncio.create_task(follow())

        await asyncio.to_thread(cluster.stop, mode)
        to_not_serving = await _until(health, NOT_SERVING)
        assert await _status(health, "kaireon.audit.v1.AuditService") == NOT_SERVING
        # Meanwhile a call fails fast instead of waiting for the database.
        started = loop.time()
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await audit.VerifyChain(audit_pb2.VerifyChainRequest(), metadata=metadata(tenant))
        refused_in = loop.time() - started
        assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
        assert error_reason(failed.value) == "DB_UNAVAILABLE"

        await asyncio.to_thread(cluster.start)
        to_serving = await _until(health, SERVING)
        assert await _status(health, "kaireon.audit.v1.AuditService") == SERVING
        reply = await audit.VerifyChain(
            audit_pb2.VerifyChainRequest(), metadata=metadata(tenant), timeout=10
        )
        assert reply.valid
        follower.cancel()
        with pytest.raises(asyncio.CancelledError):
            await follower
    # The Watch stream saw both flips, in order.
    flips = [s for i, s in enumerate(watched) if i == 0 or s != watched[i - 1]]
    assert flips == [SERVING, NOT_SERVING, SERVING], watched
    print(
        f"\nFIGURE health restart ({mode}): NOT_SERVING {to_not_serving:.2f}s after the stop, "
        f"a call refused in {refused_in:.2f}s (UNAVAILABLE), SERVING {to_serving:.2f}s "
        f"after the start (poll interval {INTERVAL}s), no server restart"
    )
