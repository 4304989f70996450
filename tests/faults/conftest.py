"""Fault-injection fixtures: servers behind a fault-injecting proxy, and a
PostgreSQL of the tests' own that they stop and restart.

Servers started here are quiet on purpose (no DSAR workers, no flow sweep, a
slow health poll) so that the only traffic through the proxy is the call a
test makes, unless the test asks otherwise.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass

import asyncpg
import grpc
import pytest

from kaireon_server.app import App
from kaireon_server.platform.config import Settings
from tests.flow.conftest import (  # noqa: F401 - fixtures of the flow test nodes
    effect_table,
    process_env,
    servers,
)
from tests.support.pg_cluster import PostgresCluster
from tests.support.tcp_proxy import TcpProxy

QUIET = {
    "KAIREON_DSAR_WORKERS": "0",
    "KAIREON_FLOW_SWEEP_SECONDS": "3600",
    "KAIREON_HEALTH_INTERVAL": "3600",
    "KAIREON_HTTP_PORT": "off",
    "KAIREON_TLOG_INTEGRATOR": "false",
}


@dataclass
class Proxied:
    """An in-process server whose every database connection goes through `proxy`."""

    app: App
    proxy: TcpProxy
    channel: grpc.aio.Channel

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.app.grpc_port}"


StartProxied = Callable[..., Awaitable[Proxied]]


@pytest.fixture
async def proxied_server(
    database_url: str, server_env: dict[str, str]
) -> AsyncIterator[StartProxied]:
    """Start servers on the session database through a fresh proxy each."""
    started: list[Proxied] = []

    async def start(target_dsn: str | None = None, **overrides: str) -> Proxied:
        dsn = target_dsn or database_url
        proxy = await TcpProxy.for_dsn(dsn).start()
        env = {**server_env, **QUIET, **overrides, "DATABASE_URL": proxy.dsn(dsn)}
        app = App(Settings.from_env(env))
        try:
            await app.start()
        except BaseException:
            await proxy.close()
            raise
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}")
        started.append(Proxied(app, proxy, channel))
        return started[-1]

    yield start
    for item in reversed(started):
        item.proxy.heal()
        await item.channel.close()
        await item.app.stop(grace=1)
        await item.proxy.close()


@pytest.fixture(scope="package")
def cluster() -> Iterator[PostgresCluster]:
    """A PostgreSQL of this package's own, so tests can stop and restart it."""
    pg = PostgresCluster().init()
    pg.start()
    try:
        yield pg
    finally:
        pg.destroy()


@pytest.fixture
async def cluster_database(cluster: PostgresCluster) -> AsyncIterator[str]:
    """A fresh database on the package's cluster (running again after each test)."""
    if not cluster.running():
        cluster.start()
    await cluster.wait_ready()
    import secrets

    name = f"faults_{secrets.token_hex(4)}"
    con = await asyncpg.connect(cluster.dsn())
    try:
        await con.execute(f'CREATE DATABASE "{name}"')
    finally:
        await con.close()
    yield cluster.dsn(name)
    if not cluster.running():
        cluster.start()
    await cluster.wait_ready()
    con = await asyncpg.connect(cluster.dsn())
    try:
        await con.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await con.close()
