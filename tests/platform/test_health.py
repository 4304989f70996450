"""Health follows database reachability: NOT_SERVING while PostgreSQL is unreachable,
SERVING again when it returns (through a fault-injecting TCP proxy)."""

from __future__ import annotations

import asyncio
from urllib.parse import parse_qs, urlparse

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from kaireon_server.app import App
from kaireon_server.platform.config import Settings
from tests.support.tcp_proxy import TcpProxy


def proxy_for(database_url: str) -> tuple[TcpProxy, str]:
    url = urlparse(database_url)
    socket_dir = parse_qs(url.query).get("host", [None])[0]
    if socket_dir:
        proxy = TcpProxy(target_unix=f"{socket_dir}/.s.PGSQL.{url.port or 5432}")
    else:
        proxy = TcpProxy(target_host=url.hostname, target_port=url.port or 5432)
    return proxy, url.path.lstrip("/")


async def _status(stub, service: str = "") -> int:
    reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    return reply.status


async def _wait_for(stub, wanted: int, timeout: float = 15.0, service: str = "") -> None:
    async with asyncio.timeout(timeout):
        while await _status(stub, service) != wanted:
            await asyncio.sleep(0.1)


@pytest.fixture
async def proxied_app(database_url, server_env):
    proxy, dbname = proxy_for(database_url)
    await proxy.start()
    user = urlparse(database_url).username or "postgres"
    env = {
        **server_env,
        "DATABASE_URL": f"postgresql://{user}@127.0.0.1:{proxy.port}/{dbname}",
        "KAIREON_HEALTH_INTERVAL": "0.2",
        "KAIREON_DB_ACQUIRE_TIMEOUT": "1",
    }
    app = App(Settings.from_env(env))
    await app.start()
    yield app, proxy
    proxy.heal()
    await app.stop(grace=1)
    await proxy.close()


async def test_health_flips_with_database(proxied_app) -> None:
    app, proxy = proxied_app
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        # SERVING once a probe gets through: under a loaded CI machine the first
        # 0.2 s ping (this test's interval bounds it) may time out, and the next
        # probe, 0.2 s later, flips it back.
        await _wait_for(stub, health_pb2.HealthCheckResponse.SERVING)
        assert (
            await _status(stub, "kaireon.audit.v1.AuditService")
            == health_pb2.HealthCheckResponse.SERVING
        )
        proxy.refuse()
        await _wait_for(stub, health_pb2.HealthCheckResponse.NOT_SERVING)
        await _wait_for(
            stub,
            health_pb2.HealthCheckResponse.NOT_SERVING,
            service="kaireon.audit.v1.AuditService",
        )
        # Liveness does not follow the database: restarting would not bring it back.
        assert await _status(stub, "liveness") == health_pb2.HealthCheckResponse.SERVING
        proxy.heal()
        await _wait_for(stub, health_pb2.HealthCheckResponse.SERVING)


async def test_calls_fail_fast_with_unavailable_while_database_is_down(proxied_app, tenant) -> None:
    from kaireon.audit.v1 import audit_pb2, audit_pb2_grpc
    from tests.support.server import metadata

    app, proxy = proxied_app
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        stub = audit_pb2_grpc.AuditServiceStub(channel)
        proxy.refuse()
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.VerifyChain(
                audit_pb2.VerifyChainRequest(), metadata=metadata(tenant), timeout=20
            )
        assert info.value.code() in (
            grpc.StatusCode.UNAVAILABLE,
            grpc.StatusCode.RESOURCE_EXHAUSTED,
        )
        proxy.heal()
        await _wait_for(health_pb2_grpc.HealthStub(channel), health_pb2.HealthCheckResponse.SERVING)
        # Recovered: pooled connections were replaced.
        reply = await stub.VerifyChain(
            audit_pb2.VerifyChainRequest(), metadata=metadata(tenant), timeout=20
        )
        assert reply.valid
