"""Numbered SQL migrations, applied at start-up in order, each once, in its own transaction.

Files are `NNNN_name.sql` in migrations/. A table records what ran, with the
file's sha256: an applied migration whose file later changed is an error, not
silently ignored. An advisory lock makes concurrent starters (several
processes, several replicas) apply each migration exactly once.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from importlib import resources

import asyncpg

log = logging.getLogger(__name__)

_NAME = re.compile(r"(\d{4})_[a-z0-9_]+\.sql")
_LOCK_KEY = 0x6B616972  # "kair": one advisory lock for all migrators


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


class MigrationError(RuntimeError):
    pass


def load_migrations() -> list[Migration]:
    folder = resources.files("kaireon_server.platform.db") / "migrations"
    found: list[Migration] = []
    for entry in folder.iterdir():
        match = _NAME.fullmatch(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), entry.name, entry.read_text()))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"duplicate migration numbers: {versions}")
    return found


async def apply_migrations(con: asyncpg.Connection) -> list[str]:
    """Apply pending migrations; return the names applied now."""
    applied_now: list[str] = []
    await con.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
    try:
        await con.execute(
            """
            CREATE TABLE IF NOT EXISTS schema_migrations (
                version integer PRIMARY KEY,
                name text NOT NULL,
                checksum text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            )
            """
        )
        done = {
            r["version"]: r["checksum"]
            for r in await con.fetch("SELECT version, checksum FROM schema_migrations")
        }
        for migration in load_migrations():
            if migration.version in done:
                if done[migration.version] != migration.checksum:
                    raise MigrationError(f"migration {migration.name} changed after it was applied")
                continue
            async with con.transaction():
                await con.execute(migration.sql)
                await con.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    migration.version,
                    migration.name,
                    migration.checksum,
                )
            applied_now.append(migration.name)
            log.info("migration applied", extra={"migration": migration.name})
    finally:
        await con.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
    return applied_now
