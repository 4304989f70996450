"""The process's one LISTEN connection (platform/db/listener.py), on a real
PostgreSQL, with a real TCP proxy to cut or silently stall it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from kaireon_server.app import App
from kaireon_server.platform.db import Database
from kaireon_server.platform.db.listener import APPLICATION_NAME, Listener
from tests.support.tcp_proxy import TcpProxy


class Recorder:
    def __init__(self) -> None:
        self.payloads: list[str] = []
        self.reconnects = 0
        self.changed = asyncio.Event()

    def on_notify(self, payload: str) -> None:
        self.payloads.append(payload)
        self.changed.set()

    def on_reconnect(self) -> None:
        self.reconnects += 1
        self.changed.set()


@pytest.fixture
async def proxy(database_url: str) -> AsyncIterator[TcpProxy]:
    proxy = await TcpProxy.for_dsn(database_url).start()
    yield proxy
    proxy.heal()
    await proxy.close()


async def _notify(database_url: str, channel: str, payload: str) -> None:
    con = await asyncpg.connect(database_url)
    try:
        await con.execute("SELECT pg_notify($1, $2)", channel, payload)
    finally:
        await con.close()


async def _until(condition: object, seconds: float = 20.0) -> None:
    async with asyncio.timeout(seconds):
        while not condition():  # type: ignore[operator]
            await asyncio.sleep(0.05)


async def test_subscribers_get_their_channel_only(database_url: str, proxy: TcpProxy) -> None:
    listener = Listener(lambda: asyncpg.connect(proxy.dsn(database_url)))
    first, second = Recorder(), Recorder()
    listener.subscribe("kaireon_test_a", first.on_notify, first.on_reconnect)
    listener.subscribe("kaireon_test_b", second.on_notify)
    await listener.start()
    try:
        assert listener.connected.is_set()
        # Woken once on connect: state may have changed before anyone listened.
        assert first.reconnects == 1
        await _notify(database_url, "kaireon_test_a", "one")
        await _notify(database_url, "kaireon_test_b", "two")
        await _until(lambda: first.payloads and second.payloads)
        assert (first.payloads, second.payloads) == (["one"], ["two"])
        with pytest.raises(RuntimeError):
            listener.subscribe("kaireon_test_c", first.on_notify)
    finally:
        await listener.stop()


async def test_a_cut_connection_is_replaced_and_subscribers_re_read(
    database_url: str, proxy: TcpProxy
) -> None:
    listener = Listener(lambda: asyncpg.connect(proxy.dsn(database_url)), min_backoff=0.05)
    seen = Recorder()
    listener.subscribe("kaireon_test_cut", seen.on_notify, seen.on_reconnect)
    await listener.start()
    try:
        assert proxy.drop() == 1
        # Woken when the loss is seen and again once connected anew.
        await _until(lambda: listener.connects == 2 and listener.connected.is_set())
        assert seen.reconnects >= 3
        await _notify(database_url, "kaireon_test_cut", "after")
        await _until(lambda: seen.payloads == ["after"])
    finally:
        await listener.stop()


async def test_a_silently_stalled_connection_is_found_by_the_probe(
    database_url: str, proxy: TcpProxy
) -> None:
    """No FIN, no error: only the probe notices (asyncpg keeps is_closed() False)."""
    listener = Listener(
        lambda: asyncpg.connect(proxy.dsn(database_url), timeout=2),
        probe_seconds=0.3,
        probe_timeout=0.5,
        min_backoff=0.05,
        max_backoff=0.2,
    )
    seen = Recorder()
    listener.subscribe("kaireon_test_stall", seen.on_notify, seen.on_reconnect)
    await listener.start()
    try:
        assert listener.connects == 1
        proxy.stall()
        await _until(lambda: not listener.connected.is_set())
        proxy.heal()
        await _until(lambda: listener.connects >= 2 and listener.connected.is_set())
        await _notify(database_url, "kaireon_test_stall", "again")
        await _until(lambda: "again" in seen.payloads)
    finally:
        await listener.stop()


async def test_the_counted_start_keeps_the_connection_until_the_last_stop(
    database_url: str, proxy: TcpProxy
) -> None:
    listener = Listener(lambda: asyncpg.connect(proxy.dsn(database_url)))
    listener.subscribe("kaireon_test_count", lambda _payload: None)
    await listener.start()
    await listener.start()
    await listener.stop()
    assert listener.connected.is_set() and proxy.open_connections() == 1
    await listener.stop()
    assert not listener.connected.is_set()
    await _until(lambda: proxy.open_connections() == 0)


async def test_dsar_and_flow_share_one_listen_connection(app: App, db: Database) -> None:
    async with db.connection() as con:
        count = await con.fetchval(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE application_name = $1 AND datname = current_database()",
            APPLICATION_NAME,
        )
    assert count == 1
