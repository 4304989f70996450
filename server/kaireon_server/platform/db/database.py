"""The asyncpg pool and the one place that opens tenant-scoped transactions."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal

import asyncpg

from kaireon_server.platform.config import Settings
from kaireon_server.platform.db.embedded import EmbeddedPostgres
from kaireon_server.platform.db.migrate import apply_migrations
from kaireon_server.platform.errors import ResourceExhausted

log = logging.getLogger(__name__)

Isolation = Literal["read_committed", "repeatable_read", "serializable"]


def _jsonb_encode(value: Any) -> bytes:
    return b"\x01" + json.dumps(value, separators=(",", ":")).encode()


def _jsonb_decode(data: bytes) -> Any:
    return json.loads(data[1:])


async def _init_connection(con: asyncpg.Connection) -> None:
    # Binary codecs, so COPY (copy_records_to_table) can carry json too.
    await con.set_type_codec(
        "jsonb", encoder=_jsonb_encode, decoder=_jsonb_decode, schema="pg_catalog", format="binary"
    )
    await con.set_type_codec(
        "json", encoder=json.dumps, decoder=json.loads, schema="pg_catalog", format="text"
    )


@dataclass
class Database:
    pool: asyncpg.Pool
    dsn: str
    acquire_timeout: float
    embedded: EmbeddedPostgres | None = None

    @asynccontextmanager
    async def _acquire(self) -> AsyncIterator[asyncpg.Connection]:
        try:
            con = await self.pool.acquire(timeout=self.acquire_timeout)
        except TimeoutError:
            # Backpressure: a saturated pool answers at once instead of queueing forever.
            raise ResourceExhausted(
                "database connection pool exhausted; retry later", reason="DB_POOL_EXHAUSTED"
            ) from None
        try:
            yield con
        finally:
            await self.pool.release(con)

    @asynccontextmanager
    async def transaction(
        self, tenant_id: str, *, isolation: Isolation = "read_committed", readonly: bool = False
    ) -> AsyncIterator[asyncpg.Connection]:
        """A transaction bound to one tenant: every statement in it runs with
        `kaireon.tenant_id` set (SET LOCAL), which row-level security keys on.
        Rolls back on any exception."""
        async with self._acquire() as con, con.transaction(isolation=isolation, readonly=readonly):
            await con.execute("SELECT set_config('kaireon.tenant_id', $1, true)", tenant_id)
            yield con

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A plain pooled connection (no tenant): for health checks and maintenance."""
        async with self._acquire() as con:
            yield con

    async def dedicated_connection(self, application_name: str = "kaireon") -> asyncpg.Connection:
        """A connection outside the pool (LISTEN, advisory locks held for a long
        time, long cursors), with the pool's json codecs; the caller closes it."""
        con: asyncpg.Connection = await asyncpg.connect(
            self.dsn, server_settings={"application_name": application_name}
        )
        await _init_connection(con)
        return con

    async def ping(self, timeout: float = 2.0) -> bool:
        try:
            async with asyncio.timeout(timeout):
                con = await self.pool.acquire(timeout=timeout)
                try:
                    await con.fetchval("SELECT 1")
                finally:
                    await self.pool.release(con)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
            return False
        return True

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self.pool.close(), timeout=10)
        except TimeoutError:
            self.pool.terminate()
        if self.embedded is not None:
            await self.embedded.stop()


async def connect_database(settings: Settings, *, migrate: bool = True) -> Database:
    """Start the embedded server when DATABASE_URL is unset, open the pool, migrate."""
    embedded: EmbeddedPostgres | None = None
    dsn = settings.database_url
    if dsn is None:
        embedded = EmbeddedPostgres(settings.data_dir)
        dsn = await embedded.start()
    server_settings: dict[str, Any] = {
        "application_name": "kaireon",
        "statement_timeout": str(settings.db_statement_timeout_ms),
    }
    try:
        pool = await asyncpg.create_pool(
            dsn,
            min_size=settings.db_pool_min,
            max_size=settings.db_pool_max,
            init=_init_connection,
            server_settings=server_settings,
        )
        if migrate:
            async with pool.acquire() as con:
                await apply_migrations(con)
    except BaseException:
        if embedded is not None:
            await embedded.stop()
        raise
    return Database(
        pool=pool, dsn=dsn, acquire_timeout=settings.db_acquire_timeout, embedded=embedded
    )
