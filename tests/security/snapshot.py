"""What a tenant holds in the database, read with the owner's connection, to compare before/after.

A snapshot is, for every table that has a `tenant_id` column, the tenant's row
count and an md5 over its rows' text, plus the tenant's audit chain head. Equal
snapshots mean nothing was inserted, deleted or updated for that tenant.
It is read with the owner DSN (asyncpg.connect(database_url)), never through the
server's pool, so row-level security cannot hide rows from the comparison.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import asyncpg

# Rows whose state the server changes on its own while a job or a run is live.
BUSY_SQL = """
SELECT (SELECT count(*) FROM dsar_request
         WHERE tenant_id = $1 AND status IN ('pending', 'processing'))
     + (SELECT count(*) FROM flow_run
         WHERE tenant_id = $1 AND state IN ('pending', 'running'))
     + (SELECT count(*) FROM processor_outbox WHERE tenant_id = $1 AND status = 'pending')
"""


@dataclass(frozen=True)
class Snapshot:
    tenant: str
    tables: Mapping[str, tuple[int, str]]  # table -> (row count, md5 of the rows)
    chain_head: tuple[int, str] | None  # (seq, head hash); None: no audit row yet

    def rows(self, table: str) -> int:
        return self.tables.get(table, (0, ""))[0]

    def changed_tables(self, other: Snapshot) -> set[str]:
        names = set(self.tables) | set(other.tables)
        changed = {t for t in names if self.tables.get(t) != other.tables.get(t)}
        if self.chain_head != other.chain_head:
            changed.add("audit_chain_head")
        return changed

    def total_rows(self) -> int:
        return sum(count for count, _ in self.tables.values())


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def tenant_tables(con: asyncpg.Connection) -> list[str]:
    """Every table of the public schema with a tenant_id column (ds_* tables included).

    Not the audit log's tree (node, state, checkpoint): the background integrator
    writes them for rows appended earlier, whenever it runs (no call does)."""
    rows = await con.fetch(
        """
        SELECT c.relname FROM pg_class c
          JOIN pg_namespace n ON n.oid = c.relnamespace
          JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped
         WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND c.relname <> 'audit_chain_head'
           AND c.relname NOT IN ('audit_tlog_node', 'audit_tlog_state', 'audit_tlog_checkpoint')
         ORDER BY c.relname
        """
    )
    return [r["relname"] for r in rows]


class Snapshotter:
    """Takes snapshots of tenants over one owner connection.

    The table list is read once; `refresh()` re-reads it (a test that creates a
    table in the middle calls it).
    """

    def __init__(self, con: asyncpg.Connection, tables: Iterable[str]) -> None:
        self.con = con
        self.tables = list(tables)
        self._sql = self._build()

    @classmethod
    async def open(cls, dsn: str) -> Snapshotter:
        con = await asyncpg.connect(dsn)
        return cls(con, await tenant_tables(con))

    async def refresh(self) -> None:
        self.tables = await tenant_tables(self.con)
        self._sql = self._build()

    def _build(self) -> str:
        parts = [
            f"SELECT {i}::int AS i, count(*) AS n, "
            f"md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) AS d "
            f"FROM {_quote(t)} x WHERE tenant_id = $1"
            for i, t in enumerate(self.tables)
        ]
        return " UNION ALL ".join(parts)

    async def take(self, tenant: str) -> Snapshot:
        async with self.con.transaction(isolation="repeatable_read", readonly=True):
            rows = await self.con.fetch(self._sql, tenant)
            head = await self.con.fetchrow(
                "SELECT seq, head_hash FROM audit_chain_head WHERE tenant_id = $1", tenant
            )
        tables = {self.tables[r["i"]]: (int(r["n"]), str(r["d"])) for r in rows}
        return Snapshot(
            tenant, tables, (int(head["seq"]), str(head["head_hash"])) if head else None
        )

    async def wait_idle(self, tenant: str, timeout: float = 30.0) -> None:
        """Waits until no DSAR job, flow run or processor delivery of the tenant is live."""
        deadline = time.monotonic() + timeout
        while await self.con.fetchval(BUSY_SQL, tenant):
            if time.monotonic() > deadline:
                raise AssertionError(f"tenant {tenant} still has live jobs after {timeout} s")
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        await self.con.close()
