"""Leased dedicated connections (flow run locks) come back clean or not at all:
no advisory lock, tenant setting, open transaction or LISTEN survives into the
next lease; a connection idle too long or broken is not reused."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from kaireon_server.platform.db import Database
from kaireon_server.platform.db import database as database_module

APP = "kaireon-test-lease"


async def _advisory_locks(db: Database, pid: int) -> int:
    """Advisory locks the backend holds, seen from another session."""
    async with db.connection() as con:
        locks = await con.fetchval(
            "SELECT count(*) FROM pg_locks WHERE pid = $1 AND locktype = 'advisory'", pid
        )
    return int(locks)


async def test_a_given_back_connection_carries_nothing_into_the_next_lease(db: Database):
    con = await db.leased_connection(APP)
    pid = con.get_server_pid()
    await con.execute("SELECT pg_advisory_lock(424242), pg_advisory_lock(424243)")
    await con.execute("SELECT set_config('kaireon.tenant_id', 'tenant_a', false)")
    await con.execute("LISTEN kaireon_lease_test")
    await con.execute("BEGIN")
    await con.execute("SELECT set_config('kaireon.tenant_id', 'tenant_b', true)")
    assert await _advisory_locks(db, pid) == 2
    await db.give_back(con, APP)

    again = await db.leased_connection(APP)
    try:
        assert again is con and again.get_server_pid() == pid  # reused, not reopened
        assert not again.is_in_transaction()
        assert await again.fetchval("SELECT current_setting('kaireon.tenant_id', true)") in (
            None,
            "",
        )
        assert await again.fetchval("SELECT count(*) FROM pg_listening_channels()") == 0
        assert await _advisory_locks(db, pid) == 0
        # Row-level security sees no tenant at all on it.
        assert await again.fetchval("SELECT count(*) FROM audit_log") == 0
    finally:
        await db.give_back(again, APP)


async def test_without_reset_only_transaction_scoped_state_ends_and_an_open_one_is_reset(
    db: Database,
):
    """`reset=False` (a DSAR export's connections): what ended with the
    transaction is gone without the reset's round trip; a connection given back
    inside a transaction is reset all the same."""
    con = await db.leased_connection(APP)
    pid = con.get_server_pid()
    async with con.transaction():
        await con.execute(
            "SELECT set_config('kaireon.tenant_id', 'tenant_a', true), "
            "pg_advisory_xact_lock_shared(424245)"
        )
    await db.give_back(con, APP, reset=False)
    again = await db.leased_connection(APP)
    assert again is con
    assert await again.fetchval("SELECT current_setting('kaireon.tenant_id', true)") in (None, "")
    assert await _advisory_locks(db, pid) == 0

    await again.execute("BEGIN")
    await again.execute("SELECT set_config('kaireon.tenant_id', 'tenant_b', true)")
    await db.give_back(again, APP, reset=False)
    third = await db.leased_connection(APP)
    try:
        assert third is con and not third.is_in_transaction()
        assert await third.fetchval("SELECT current_setting('kaireon.tenant_id', true)") in (
            None,
            "",
        )
    finally:
        await db.give_back(third, APP)


async def test_an_old_or_broken_connection_is_not_reused(
    db: Database, monkeypatch: pytest.MonkeyPatch
):
    con = await db.leased_connection(APP)
    await db.give_back(con, APP)
    monkeypatch.setattr(database_module, "IDLE_SECONDS", 0.0)
    fresh = await db.leased_connection(APP)
    assert fresh is not con and con.is_closed()
    monkeypatch.setattr(database_module, "IDLE_SECONDS", 10.0)

    fresh.terminate()
    await db.give_back(fresh, APP)  # closed: dropped
    other = await db.leased_connection(APP)
    assert other is not fresh and not other.is_closed()
    await db.give_back(other, APP)

    # A statement still running when it is given back (a cancelled caller): the
    # reset cannot run, so the connection is dropped and nothing kept; PostgreSQL
    # ends the session (its locks with it) once the statement ends.
    busy = await db.leased_connection(APP)
    pid = busy.get_server_pid()
    await busy.execute("SELECT pg_advisory_lock(424244)")
    stuck = asyncio.create_task(busy.execute("SELECT pg_sleep(1)"))
    await asyncio.sleep(0.2)
    await db.give_back(busy, APP)
    assert busy.is_closed()
    stuck.cancel()
    with contextlib.suppress(BaseException):
        await stuck
    for _ in range(100):
        locks = await _advisory_locks(db, pid)
        if locks == 0:
            break
        await asyncio.sleep(0.1)
    assert locks == 0
    reused = await db.leased_connection(APP)
    assert reused is not busy
    await db.give_back(reused, APP)


async def test_transaction_on_commits_rolls_back_and_ends_a_stuck_session(
    db: Database, tenant: str
) -> None:
    """`transaction_on` (a flow run's insert on its lock connection): a commit
    keeps, an error rolls back and leaves the session usable, a timeout ends the
    session (a statement may still be in flight) rather than reuse it."""
    con = await db.leased_connection(APP)
    try:
        await con.execute("SELECT set_config('kaireon.tenant_id', $1, false)", tenant)
        insert = (
            "INSERT INTO flow_run (tenant_id, run_id, name, definition, definition_digest,"
            " state, attempt, started_at, created_at)"
            " VALUES ($1, $2, 'n', '{}', '', 'running', 1, now(), now())"
        )
        async with db.transaction_on(con):
            await con.execute(insert, tenant, "kept")
        with pytest.raises(ValueError):
            async with db.transaction_on(con):
                await con.execute(insert, tenant, "rolled_back")
                raise ValueError("refused")
        assert not con.is_in_transaction()
        rows = await con.fetch("SELECT run_id FROM flow_run WHERE tenant_id = $1", tenant)
        assert [r["run_id"] for r in rows] == ["kept"]

        db.command_timeout, bound = 0.2, db.command_timeout
        try:
            with pytest.raises(TimeoutError):
                async with db.transaction_on(con):
                    await con.execute("SELECT pg_sleep(5)")
        finally:
            db.command_timeout = bound
        assert con.is_closed()
    finally:
        await db.give_back(con, APP)
