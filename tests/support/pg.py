"""A real PostgreSQL for tests: the embedded server, or DATABASE_URL's server.

With DATABASE_URL set (e.g. the machine's PostgreSQL 15), each test session
creates a fresh database on that server and drops it afterwards, so runs never
see each other's rows.
"""

from __future__ import annotations

import secrets
import tempfile
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlunparse

import asyncpg

from kaireon_server.platform.config import Settings
from kaireon_server.platform.db import Database
from kaireon_server.platform.db.database import connect_database
from kaireon_server.platform.db.embedded import get_server
from tests.support.tcp_proxy import TcpProxy


@contextmanager
def embedded_server(data_dir: Path | None = None) -> Iterator[Any]:
    folder = data_dir or Path(tempfile.mkdtemp(prefix="kaireon-test-pg-"))
    # The server's own start (retries pgserver's occasional failed pg_ctl start).
    server = get_server(folder / "pgdata")
    try:
        yield server
    finally:
        server.cleanup()


def with_database(dsn: str, name: str) -> str:
    parts = urlparse(dsn)
    return urlunparse(parts._replace(path=f"/{name}"))


async def create_database(admin_dsn: str, prefix: str = "kaireon_test") -> str:
    name = f"{prefix}_{secrets.token_hex(4)}"
    con = await asyncpg.connect(admin_dsn)
    try:
        await con.execute(f'CREATE DATABASE "{name}"')
    finally:
        await con.close()
    return with_database(admin_dsn, name)


async def drop_database(admin_dsn: str, dsn: str) -> None:
    name = urlparse(dsn).path.lstrip("/")
    con = await asyncpg.connect(admin_dsn)
    try:
        await con.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await con.close()


@asynccontextmanager
async def counted_database(
    database_url: str, env: Mapping[str, str], *, pool: int
) -> AsyncIterator[tuple[Database, TcpProxy]]:
    """A migrated database's pool of `pool` connections (and its dedicated ones)
    whose every byte goes through a proxy that counts round trips."""
    proxy = await TcpProxy.for_dsn(database_url).start()
    settings = {
        **env,
        "DATABASE_URL": proxy.dsn(database_url),
        "KAIREON_DB_POOL_MIN": str(pool),
        "KAIREON_DB_POOL_MAX": str(pool),
    }
    db = await connect_database(Settings.from_env(settings), migrate=False)
    try:
        yield db, proxy
    finally:
        await db.close()
        await proxy.close()
