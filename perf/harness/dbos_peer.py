"""DBOS Transact beside the flow runner: a chain of no-op steps, durably recorded
in the same PostgreSQL (issue #22, "peers in the same run").

DBOS (PyPI `dbos`) checkpoints a workflow and the output of each of its steps
in its system database, as the flow runner checkpoints each node; a chain of N
`@DBOS.step()` no-ops in one `@DBOS.workflow()` is the peer of a chain of N
`bench.noop` nodes. Its system database is a database of its own
(`kaireon_dbos`, created by DBOS) on the run's PostgreSQL server, with
`synchronous_commit` on (DBOS's default: every step waits for the WAL flush)
or off (set for its connections through libpq's `options`), the two modes the
flow rows are measured in.

DBOS is a process-wide singleton with threads of its own: it runs here on an
event loop of its own in the measuring thread, is launched once per mode and
destroyed after it.

The embedded PostgreSQL (pgserver) ships no contrib extensions, and DBOS's
first schema migration creates `uuid-ossp` without using it (its UUIDs come
from the core `gen_random_uuid()`). Where the extension is missing, its schema
is applied here first, from DBOS's own migration list without that one
statement; DBOS then finds it current.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlparse

import psutil
import psycopg
import sqlalchemy as sa
from dbos import DBOS
from dbos import _migration as dbos_migration

from harness.procmon import sample_tree

DATABASE = "kaireon_dbos"
SCHEMA = "dbos"
_UUID_OSSP = 'CREATE EXTENSION IF NOT EXISTS "uuid-ossp";'


@dataclass
class Rounds:
    """Wall, CPU (this process, threads included) and PostgreSQL CPU seconds of each
    timed round, here and in the flow runner's rows; PostgreSQL's is that of the
    embedded postmaster's tree, where there is one."""

    postmaster: int | None
    walls: list[float] = field(default_factory=list)
    cpus: list[float] = field(default_factory=list)
    pgs: list[float] = field(default_factory=list)

    def pg_cpu(self) -> float | None:
        """CPU seconds of the embedded PostgreSQL, exited backends included (reaped
        children count in the postmaster's children times)."""
        if self.postmaster is None:
            return None
        try:
            reaped = psutil.Process(self.postmaster).cpu_times()
        except psutil.Error:
            return None
        alive = sample_tree([self.postmaster], full=False).cpu.values()
        return reaped.children_user + reaped.children_system + sum(s for s, _ in alive)

    @contextlib.contextmanager
    def timed(self) -> Iterator[None]:
        """One round: what the block takes."""
        pg, cpu, started = self.pg_cpu(), time.process_time(), time.perf_counter()
        yield
        self.walls.append(time.perf_counter() - started)
        self.cpus.append(time.process_time() - cpu)
        if pg is not None and (after := self.pg_cpu()) is not None:
            self.pgs.append(after - pg)


@DBOS.step()
async def noop(i: int) -> dict[str, int]:
    return {"n": i}


@DBOS.workflow()
async def chain(n: int) -> int:
    for i in range(n):
        await noop(i)
    return n


def system_database_url(owner_dsn: str, *, synchronous: bool) -> str:
    """The run's PostgreSQL with DBOS's own database (and, off, its commit mode)."""
    parts = urlparse(owner_dsn)
    query = parts.query
    if not synchronous:
        option = "options=" + quote("-c synchronous_commit=off")
        query = f"{query}&{option}" if query else option
    return parts._replace(path=f"/{DATABASE}", query=query).geturl()


def measure(
    owner_dsn: str, nodes: int, rounds: int, synchronous: bool, postmaster: int | None
) -> Rounds:
    """`rounds` workflows of `nodes` steps each, timed, after one warm-up workflow."""
    _prepare(owner_dsn)
    config: Any = {
        "name": "kaireon-perf-peer",
        "system_database_url": system_database_url(owner_dsn, synchronous=synchronous),
        "run_admin_server": False,
        "log_level": "WARNING",
    }

    async def timed() -> Rounds:
        DBOS(config=config)
        DBOS.launch()
        out = Rounds(postmaster)
        try:
            await _workflow(nodes)  # warm-up: connections, DBOS's tables, plans
            for _ in range(rounds):
                with out.timed():
                    await _workflow(nodes)
        finally:
            DBOS.destroy(destroy_registry=False)
        return out

    return asyncio.run(timed())


def _prepare(owner_dsn: str) -> None:
    """DBOS's database, and its schema where DBOS could not create it itself."""
    with psycopg.connect(owner_dsn, autocommit=True) as con:
        if con.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone():
            return
        con.execute(f"CREATE DATABASE {DATABASE}")
        if con.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'uuid-ossp'").fetchone():
            return  # DBOS migrates it as it always does
    url = system_database_url(owner_dsn, synchronous=True)
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        dbos_migration.ensure_dbos_schema(engine, SCHEMA)
        migrations = dbos_migration.get_dbos_migrations(SCHEMA)
        with engine.begin() as con:
            for sql in migrations:
                con.execute(sa.text(sql.replace(_UUID_OSSP, "")))
            con.execute(
                sa.text(f"INSERT INTO {SCHEMA}.dbos_migrations (version) VALUES (:v)"),
                {"v": len(migrations)},
            )
    finally:
        engine.dispose()


async def _workflow(nodes: int) -> None:
    handle = await DBOS.start_workflow_async(chain, nodes)
    if await handle.get_result() != nodes:
        raise RuntimeError("the DBOS workflow did not run every step")
