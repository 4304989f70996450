"""Beyond KAIREON_GRPC_MAX_CONCURRENT_RPCS authenticated calls in flight, a new call
is refused at once (RESOURCE_EXHAUSTED; REST 429) instead of waiting in an
unbounded queue. Anonymous health watches do not count (tests/platform/test_admission.py)."""

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
    env = {
        **server_env,
        "KAIREON_GRPC_MAX_CONCURRENT_RPCS": str(LIMIT),
        "KAIREON_TENANT_MAX_INFLIGHT_SHARE": "1",
        # The calls that fill the limit wait for a connection (the test holds them all).
        "KAIREON_DB_POOL_MIN": "1",
        "KAIREON_DB_POOL_MAX": "1",
        "KAIREON_DB_POOL_MAX_WAITERS": "100",
        "KAIREON_DB_ACQUIRE_TIMEOUT": "30",
    }
    app = App(Settings.from_env(env))
    await app.start()
    yield app
    await app.stop(grace=1)


async def test_calls_beyond_the_limit_are_refused_fast_then_served_again(
    small_app: App, tenant: str
) -> None:
    md = metadata(tenant)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{small_app.grpc_port}") as channel:
        audit = audit_pb2_grpc.AuditServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        assert small_app.db is not None and small_app.admission is not None
        held = await small_app.db.pool.acquire()
        # LIMIT calls waiting for the held connection: LIMIT calls in flight.
        waiting = [
            asyncio.ensure_future(
                audit.VerifyChain(audit_pb2.VerifyChainRequest(), metadata=md, timeout=30)
            )
            for _ in range(LIMIT)
        ]
        async with asyncio.timeout(10):
            while small_app.admission.calls.inflight < LIMIT:
                await asyncio.sleep(0.02)
        # Anonymous calls have their own budget: health still answers.
        reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
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
        await small_app.db.pool.release(held)
        assert all(r.valid for r in await asyncio.gather(*waiting))
        verified = await audit.VerifyChain(audit_pb2.VerifyChainRequest(), metadata=md, timeout=10)
        assert verified.valid
