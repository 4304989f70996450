"""An export transaction left idle (a stalled worker) is ended by PostgreSQL,
so it cannot hold its snapshot and table locks, and whatever queued behind
them, until its process dies."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from kaireon_server.dsar.exporter import Snapshot, start_snapshot
from kaireon_server.dsar.jobs import idle_timeout_ms
from kaireon_server.dsar.settings import DsarSettings
from kaireon_server.platform.db import Database


def test_the_bound_is_a_minute_at_least_and_covers_the_lease_and_the_pause() -> None:
    assert idle_timeout_ms(DsarSettings()) == 60_000
    slow = DsarSettings(lease_seconds=600.0, heartbeat_seconds=10.0, throttle_seconds=2.5)
    assert idle_timeout_ms(slow) == 602_500


async def _snapshot(con: asyncpg.Connection, idle_ms: int) -> None:
    await start_snapshot(
        con,
        Snapshot(
            "t-idle", "s-idle", "00000000-0000-0000-0000-000000000001", idle_timeout_ms=idle_ms
        ),
    )


async def test_an_idle_export_transaction_is_ended(db: Database) -> None:
    con = await db.dedicated_connection("kaireon-test-idle")
    try:
        tx = con.transaction(isolation="repeatable_read", readonly=True)
        await tx.start()
        await _snapshot(con, 1000)
        await asyncio.sleep(0.2)
        assert await con.fetchval("SELECT 1") == 1  # busy, not idle: still there
        await asyncio.sleep(2.5)
        # PostgreSQL ended the session (asyncpg may see the FATAL before the query).
        with pytest.raises(
            (
                asyncpg.IdleInTransactionSessionTimeoutError,
                asyncpg.ConnectionDoesNotExistError,
                asyncpg.InterfaceError,
            )
        ):
            await con.fetchval("SELECT 1")
        assert con.is_closed()
        async with db.owner_connection() as owner:
            left = await owner.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                "kaireon-test-idle",
            )
        assert left == 0
    finally:
        con.terminate()


async def test_the_bound_ends_with_its_transaction(db: Database) -> None:
    con = await db.dedicated_connection("kaireon-test-idle")
    try:
        async with con.transaction():
            await _snapshot(con, 300)
        # A connection given back and kept (reset=False) is not bound any more.
        assert await con.fetchval("SHOW idle_in_transaction_session_timeout") == "0"
        async with con.transaction():
            await asyncio.sleep(1.0)
            assert await con.fetchval("SELECT 1") == 1
    finally:
        con.terminate()
