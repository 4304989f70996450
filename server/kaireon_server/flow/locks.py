"""One executor per run across processes: a session advisory lock held for the run.

The lock lives on a dedicated connection (not the pool) for the whole run
attempt. If the process dies, even by SIGKILL, the kernel closes its socket,
PostgreSQL ends the session and releases the lock, and another process may
retry the run. Session locks need a direct connection: behind a
transaction-pooling proxy (pgbouncer in transaction mode) they do not hold.

The connection serves one tenant's run for its whole life, so the tenant is
set for the session (`kaireon.tenant_id`, what row-level security keys on)
when the lock is taken: the run's checkpoint statements and its watchdog's
reads on it see the run's tenant without a transaction to open.
"""

from __future__ import annotations

import asyncio
import hashlib

import asyncpg

from kaireon_server.flow.stores import SharedConnection
from kaireon_server.platform.db import Database

APPLICATION_NAME = "kaireon-flow"


async def dedicated_connection(db: Database) -> asyncpg.Connection:
    """A connection outside the pool for advisory locks and LISTEN; it carries the
    pool's jsonb codec (checkpoint outputs are written on the lock's connection)."""
    return await db.dedicated_connection(application_name=APPLICATION_NAME)


def lock_key(tenant_id: str, run_id: str) -> int:
    """A signed 64-bit key from (tenant, run); a collision only costs a spurious refusal."""
    digest = hashlib.sha256(f"kaireon.flow\x00{tenant_id}\x00{run_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class RunLock:
    """The lock and its connection; `shared` lets the run's checkpoint writes and
    its watchdog use that connection in turn."""

    def __init__(self, db: Database, con: asyncpg.Connection, key: int) -> None:
        self.shared = SharedConnection(con)
        self.key = key
        self._db = db

    @property
    def con(self) -> asyncpg.Connection:
        return self.shared.con

    @classmethod
    async def try_acquire(
        cls, db: Database, tenant_id: str, run_id: str, *, wait: float = 0.25
    ) -> RunLock | None:
        """The lock, or None when another session holds it after `wait` seconds.

        The short wait absorbs a sweeper or a ClearCheckpoints holding the lock
        for one statement; a run's executor holds it far longer.
        """
        key = lock_key(tenant_id, run_id)
        # Leased: given back reset (lock released, tenant cleared) for the next run.
        con = await db.leased_connection(APPLICATION_NAME)
        try:
            deadline = asyncio.get_running_loop().time() + wait
            while True:
                # One round trip: the lock, and the session's tenant (the connection is
                # closed at once when the lock is not had). Bounded: a stalled socket
                # must not hang StartRun/RetryRun.
                row = await con.fetchrow(
                    "SELECT pg_try_advisory_lock($1) AS locked, "
                    "set_config('kaireon.tenant_id', $2, false)",
                    key,
                    tenant_id,
                    timeout=db.command_timeout,
                )
                if row is not None and row["locked"]:
                    return cls(db, con, key)
                if asyncio.get_running_loop().time() >= deadline:
                    break
                await asyncio.sleep(0.05)
        except BaseException:
            # A statement may still be in flight (cancelled, timed out): never reuse.
            con.terminate()
            raise
        await db.give_back(con, APPLICATION_NAME)
        return None

    async def release(self, *, released: bool = False) -> None:
        """Release the lock: the connection's reset ends the session's lock and
        tenant; the connection is then kept for another run, or closed.
        `released`: a statement on the connection has released the lock and
        cleared the tenant already (the run's end), so no reset is needed."""
        async with self.shared.mutex:
            con = self.shared.detach()
        if con is not None:
            await self._db.give_back(con, APPLICATION_NAME, reset=not released)
