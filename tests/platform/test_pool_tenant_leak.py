"""A tenant setting never survives onto the next user of a pooled connection.

A pool of one real connection (the pool's own init and reset), so every user
below gets the same backend (asserted by pid): tenant A's work fails midway on
each path that hands out pooled connections (`transaction`, `single_statements`
with the tenant set locally the way kaireon_provenance_bundle does it, and a
careless session-level `set_config` that then fails), and the next user, on
every path, sees no tenant setting and none of A's rows.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest

from kaireon_server.platform.audit_chain import append_audit
from kaireon_server.platform.db import Database
from kaireon_server.platform.db.database import _init_connection, _reset_session

SETTING = "SELECT current_setting('kaireon.tenant_id', true)"


@pytest.fixture
async def one_connection_db(db: Database) -> AsyncIterator[Database]:
    pool = await asyncpg.create_pool(
        db.app_dsn, min_size=1, max_size=1, init=_init_connection, reset=_reset_session
    )
    try:
        yield Database(pool=pool, dsn=db.dsn, app_dsn=db.app_dsn, acquire_timeout=5.0)
    finally:
        await pool.close()


async def _pid(small: Database) -> int:
    async with small.connection() as con:
        return int(await con.fetchval("SELECT pg_backend_pid()"))


async def _in_transaction_then_fail(small: Database, tenant: str) -> None:
    with pytest.raises(asyncpg.DivisionByZeroError):
        async with small.transaction(tenant) as con:
            await con.execute("SELECT set_config('kaireon.tenant_id', $1, false)", tenant)
            await con.fetchval("SELECT 1 / 0")


async def _single_local_then_fail(small: Database, tenant: str) -> None:
    with pytest.raises(asyncpg.DivisionByZeroError):
        async with small.single_statements() as con:
            await con.fetchval(
                "SELECT count(*) / 0 FROM (SELECT set_config('kaireon.tenant_id', $1, true)) s",
                tenant,
            )


async def _single_session_then_fail(small: Database, tenant: str) -> None:
    # A statement that sets the tenant for the session and fails later in the
    # same statement: its implicit transaction takes the setting back with it.
    with pytest.raises(asyncpg.DivisionByZeroError):
        async with small.single_statements() as con:
            await con.fetchval(
                "SELECT count(*) / 0 FROM (SELECT set_config('kaireon.tenant_id', $1, false)) s",
                tenant,
            )


async def _single_then_python_error(small: Database, tenant: str) -> None:
    # The caller's code fails between statements after a session-level set:
    # the connection must not go back to the pool unreset.
    with pytest.raises(RuntimeError):
        async with small.single_statements() as con:
            await con.execute("SELECT set_config('kaireon.tenant_id', $1, false)", tenant)
            raise RuntimeError("handler failed midway")


FAILURES: dict[str, Callable[[Database, str], Awaitable[None]]] = {
    "transaction": _in_transaction_then_fail,
    "single_local": _single_local_then_fail,
    "single_session": _single_session_then_fail,
    "single_python_error": _single_then_python_error,
}


@pytest.mark.parametrize("failure", sorted(FAILURES))
async def test_a_failed_users_tenant_does_not_reach_the_next_user(
    one_connection_db: Database, failure: str, tenant: str
) -> None:
    small = one_connection_db
    async with small.transaction(tenant) as con:
        await append_audit(
            con, tenant, action="leak.probe", entity_type="probe", entity_id="p1", actor="test"
        )
    pid = await _pid(small)

    await FAILURES[failure](small, tenant)

    # Every kind of next user, on the same backend.
    async with small.single_statements() as con:
        assert await con.fetchval("SELECT pg_backend_pid()") == pid
        assert await con.fetchval(SETTING) in (None, "")
        assert await con.fetchval("SELECT count(*) FROM audit_log") == 0
    async with small.connection() as con:
        assert await con.fetchval("SELECT pg_backend_pid()") == pid
        assert await con.fetchval(SETTING) in (None, "")
        assert await con.fetchval("SELECT count(*) FROM audit_log") == 0
    async with small.transaction(f"{tenant}_other") as con:
        assert await con.fetchval("SELECT pg_backend_pid()") == pid
        assert await con.fetchval("SELECT count(*) FROM audit_log") == 0
    # And tenant A's own transaction still sees its row (the probe is real).
    async with small.transaction(tenant) as con:
        assert await con.fetchval("SELECT count(*) FROM audit_log") == 1
