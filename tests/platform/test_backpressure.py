"""Beyond KAIREON_GRPC_MAX_CONCURRENT_RPCS calls in flight, a new call is refused at
once (RESOURCE_EXHAUSTED; REST 429) instead of waiting in an unbounded queue."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aiohttp
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from kaireon.audit.v1 import audit_pb2, audit_pb2_grpc
from kaireon_server.app import App
from kaireon_server.platform.config import Settings
from tests.support.server import metadata

LIMIT = 3


@pytest.fixture
async def small_app(server_env: dict[str, str]) -> AsyncIterator[App]:
    env = {**server_env, "KAIREON_GRPC_MAX_CONCURRENT_RPCS": str(LIMIT)}
    app = App(Settings.from_env(env))
    await app.start()
    yield app
    await app.stop(grace=1)


async def test_calls_beyond_the_limit_are_refused_fast_then_served_again(
    small_app: App, tenant: str
) -> None:
    md = metadata(tenant)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{small_app.grpc_port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        audit = audit_pb2_grpc.AuditServiceStub(channel)
        # Health watches stay open until cancelled: LIMIT calls in flight.
        watches = [health.Watch(health_pb2.HealthCheckRequest()) for _ in range(LIMIT)]
        for watch in watches:  # each is in flight once its first state arrived
            assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await audit.VerifyChain(audit_pb2.VerifyChainRequest(), metadata=md, timeout=10)
        refused_after = time.monotonic() - started
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert refused_after < 2.0, refused_after  # refused, not queued until the deadline
        async with aiohttp.ClientSession() as session:
            async with session.post(
                f"http://127.0.0.1:{small_app.http_port}/api/v1/audit:verify",
                headers={"X-Tenant-Id": tenant, "X-User-Role": "admin"},
                json={},
            ) as response:
                assert response.status == 429
                assert (await response.json())["code"] == grpc.StatusCode.RESOURCE_EXHAUSTED.value[
                    0
                ]
        for watch in watches:
            watch.cancel()
        await asyncio.sleep(0.2)
        reply = await audit.VerifyChain(audit_pb2.VerifyChainRequest(), metadata=md, timeout=10)
        assert reply.valid
