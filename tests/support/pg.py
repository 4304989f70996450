"""A real PostgreSQL for tests: the embedded server, or DATABASE_URL's server.

With DATABASE_URL set (e.g. the machine's PostgreSQL 15), each test session
creates a fresh database on that server and drops it afterwards, so runs never
see each other's rows.
"""

from __future__ import annotations

import secrets
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlunparse

import asyncpg

from kaireon_server.platform.db.embedded import get_server


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
