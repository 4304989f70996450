"""The statement that ends a run releases its lock on the lock's own connection.

The run's end (its last events, its state, NOTIFY) is sent on the connection
holding the run's advisory lock, and the same statement releases the lock and
clears the session's tenant: the connection goes back to the lease without its
reset, a round trip (tests/flow/test_round_trips.py counts them). Here: what it
leaves behind is what the reset would have left, and when the lock's
connection fails at the end, the pool writes the end instead.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import asyncpg
import pytest

from kaireon_server.flow import executor, repository
from kaireon_server.flow.definition import definition_from_json
from kaireon_server.flow.locks import APPLICATION_NAME, lock_key
from kaireon_server.flow.manager import RunManager
from kaireon_server.platform.auth import Identity
from kaireon_server.platform.auth.identity import Role
from kaireon_server.platform.db import Database
from tests.flow.support import run_manager
from tests.flow.test_round_trips import CHAIN
from tests.support.tcp_proxy import TcpProxy


async def _run(manager: RunManager, identity: Identity) -> str:
    run_id = f"r{secrets.token_hex(6)}"
    await manager.start_run(identity, definition_from_json(CHAIN), run_id)
    async with asyncio.timeout(30):
        while (identity.tenant_id, run_id) in manager.executors.active:
            await asyncio.sleep(0.01)
    return run_id


async def _state(db: Database, tenant: str, run_id: str) -> str:
    async with db.transaction(tenant, readonly=True) as con:
        view = await repository.get_run(con, tenant, run_id)
    assert view is not None
    return view.state.value


async def test_the_lock_connection_comes_back_as_its_reset_would_leave_it(
    counted_pool: tuple[Database, TcpProxy], database_url: str, tenant: str
) -> None:
    db, _proxy = counted_pool
    manager = run_manager(db, database_url)
    identity = Identity(tenant, Role.ADMIN, "test-user")
    run_id = await _run(manager, identity)
    assert await _state(db, tenant, run_id) == "succeeded"

    con = await db.leased_connection(APPLICATION_NAME)
    try:
        pid = con.get_server_pid()
        assert not con.is_in_transaction()
        assert await con.fetchval("SELECT current_setting('kaireon.tenant_id', true)") in (
            None,
            "",
        )
        async with db.connection() as other:
            held = await other.fetchval(
                "SELECT count(*) FROM pg_locks WHERE pid = $1 AND locktype = 'advisory'", pid
            )
            assert held == 0
            # The run's lock is free for anyone.
            key = lock_key(tenant, run_id)
            assert await other.fetchval("SELECT pg_try_advisory_lock($1)", key)
            await other.fetchval("SELECT pg_advisory_unlock($1)", key)
    finally:
        await db.give_back(con, APPLICATION_NAME)


async def test_when_the_lock_connection_fails_at_the_end_the_pool_ends_the_run(
    counted_pool: tuple[Database, TcpProxy],
    database_url: str,
    tenant: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The lock's session is ended by the server as the end is sent on it: the
    statement fails, the pool writes the end at once, and the dead connection
    is not kept for another run.

    Once the session is gone its lock is free, and the sweep of any server on
    this database may take the run for lost (FAILED, "executor lost"): a race
    the real executor can lose too, as it should. Here the test takes the lock
    itself as soon as it is free, so only the executor's own end can land."""
    db, _proxy = counted_pool
    real_end = repository.finish_run_alone
    ended_on: list[int] = []
    holders: list[asyncpg.Connection] = []

    async def end_after_losing_the_session(con: asyncpg.Connection, **kwargs: Any) -> None:
        if kwargs.get("release_lock"):
            ended_on.append(con.get_server_pid())
            async with db.connection() as other:
                await other.execute("SELECT pg_terminate_backend($1)", con.get_server_pid())
            holder = await db.dedicated_connection()
            holders.append(holder)
            key = lock_key(kwargs["tenant_id"], kwargs["run_id"])
            async with asyncio.timeout(10):  # until the dead session lets go of it
                while not await holder.fetchval("SELECT pg_try_advisory_lock($1)", key):
                    await asyncio.sleep(0.01)
        await real_end(con, **kwargs)

    monkeypatch.setattr(repository, "finish_run_alone", end_after_losing_the_session)
    manager = run_manager(db, database_url)
    identity = Identity(tenant, Role.ADMIN, "test-user")
    try:
        run_id = await _run(manager, identity)
        assert len(ended_on) == 1
        assert await _state(db, tenant, run_id) == "succeeded"
    finally:
        for holder in holders:
            await holder.close()
    con = await db.leased_connection(APPLICATION_NAME)
    try:
        assert con.get_server_pid() != ended_on[0]
    finally:
        await db.give_back(con, APPLICATION_NAME)
    # The lock went with the session (and the test's hold with its connection).
    async with db.connection() as other:
        key = lock_key(tenant, run_id)
        assert await other.fetchval("SELECT pg_try_advisory_lock($1)", key)
        await other.fetchval("SELECT pg_advisory_unlock($1)", key)


@pytest.fixture(autouse=True)
def _no_watchdog_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    # The watchdog's read every 2 s is not what these tests look at.
    monkeypatch.setattr(executor, "WATCHDOG_SECONDS", 120.0)
