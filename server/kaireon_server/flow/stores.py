"""Checkpoint stores: one interface, an in-memory and a PostgreSQL implementation.

A checkpoint is the output of one successful node of one run, with its cache
key and output digest. The runner writes it through a CheckpointWriter whose
transaction the node may join (NodeContext.transaction), so a node's own
database writes and its checkpoint commit together (PostgreSQL store) and a
node that fails, times out or is cancelled leaves neither behind.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import asyncpg

from kaireon_server.flow.nodes.base import Transactional
from kaireon_server.platform.db import Database, close_connection


@dataclass(frozen=True)
class Checkpoint:
    node_id: str
    cache_key: str
    output_digest: str
    output: Any
    created_at: datetime


class CheckpointWriter(Transactional, Protocol):
    async def commit(self, cache_key: str, output: Any, output_digest: str) -> None:
        """Persist the checkpoint (and commit the node's transaction) atomically."""

    async def abort(self) -> None:
        """Roll back whatever the node wrote; no checkpoint is stored."""


class CheckpointStore(Protocol):
    async def load(self, tenant_id: str, run_id: str) -> dict[str, Checkpoint]:
        """Every checkpoint of a run, by node id."""

    def writer(self, tenant_id: str, run_id: str, node_id: str) -> CheckpointWriter:
        """A writer for one execution attempt of one node."""

    async def clear(self, tenant_id: str, run_id: str) -> int:
        """Delete a run's checkpoints; return how many there were."""

    def session(
        self, tenant_id: str, run_id: str
    ) -> contextlib.AbstractAsyncContextManager[CheckpointStore]:
        """The store to use for one run attempt (the runner holds it for the run),
        e.g. bound to a connection of the run."""


class _NodeTransaction:
    """A lazily opened tenant transaction, committed or rolled back once."""

    def __init__(self, db: Database | None, tenant_id: str) -> None:
        self._db = db
        self._tenant_id = tenant_id
        self._stack: contextlib.AsyncExitStack | None = None
        self._con: asyncpg.Connection | None = None

    async def connection(self) -> asyncpg.Connection:
        if self._con is None:
            if self._db is None:
                raise RuntimeError("this checkpoint store has no database for node writes")
            stack = contextlib.AsyncExitStack()
            self._con = await stack.enter_async_context(self._db.transaction(self._tenant_id))
            self._stack = stack
        return self._con

    @property
    def open(self) -> bool:
        return self._con is not None

    async def finish(self, *, commit: bool) -> None:
        stack, self._stack, self._con = self._stack, None, None
        if stack is None:
            return
        if commit:
            await stack.aclose()
        else:
            rollback = RuntimeError("node attempt rolled back")
            await stack.__aexit__(type(rollback), rollback, None)


# --- in memory -------------------------------------------------------------------


class _MemoryWriter:
    def __init__(
        self, store: InMemoryCheckpointStore, tenant_id: str, run_id: str, node_id: str
    ) -> None:
        self._store = store
        self._key = (tenant_id, run_id)
        self._node_id = node_id
        self._tx = _NodeTransaction(store.db, tenant_id)

    async def connection(self) -> asyncpg.Connection:
        return await self._tx.connection()

    async def commit(self, cache_key: str, output: Any, output_digest: str) -> None:
        # Not atomic with the node's writes (memory cannot join a database
        # transaction): the writes commit first, then the checkpoint is kept.
        await self._tx.finish(commit=True)
        self._store.runs.setdefault(self._key, {})[self._node_id] = Checkpoint(
            self._node_id, cache_key, output_digest, output, datetime.now(UTC)
        )

    async def abort(self) -> None:
        await self._tx.finish(commit=False)


class InMemoryCheckpointStore:
    """Checkpoints in a dict: for tests and local development (lost on exit)."""

    def __init__(self, db: Database | None = None) -> None:
        # Only used to give nodes a transaction; checkpoints never touch it.
        self.db = db
        self.runs: dict[tuple[str, str], dict[str, Checkpoint]] = {}

    async def load(self, tenant_id: str, run_id: str) -> dict[str, Checkpoint]:
        return dict(self.runs.get((tenant_id, run_id), {}))

    def writer(self, tenant_id: str, run_id: str, node_id: str) -> CheckpointWriter:
        return _MemoryWriter(self, tenant_id, run_id, node_id)

    async def clear(self, tenant_id: str, run_id: str) -> int:
        return len(self.runs.pop((tenant_id, run_id), {}))

    @contextlib.asynccontextmanager
    async def session(self, tenant_id: str, run_id: str) -> AsyncIterator[CheckpointStore]:
        yield self


# --- PostgreSQL ------------------------------------------------------------------

CHECKPOINT_UPSERT = """
INSERT INTO flow_run_checkpoint (tenant_id, run_id, node_id, cache_key, output_digest, output)
SELECT $1, $2, $3, $4, $5, $6
  FROM (SELECT set_config('synchronous_commit', $7, true),
               set_config('kaireon.tenant_id', $1, true)) AS settings
ON CONFLICT (tenant_id, run_id, node_id) DO UPDATE
   SET cache_key = EXCLUDED.cache_key, output_digest = EXCLUDED.output_digest,
       output = EXCLUDED.output, created_at = now()
"""


_LOAD_CHECKPOINTS = (
    "SELECT node_id, cache_key, output_digest, output, created_at "
    "FROM flow_run_checkpoint WHERE tenant_id = $1 AND run_id = $2"
)


class SharedConnection:
    """A connection several tasks take turns on (asyncpg runs one operation at a time):
    hold `mutex`, then use `await get()`. Given (the run lock's connection), or
    opened by `opener` at first use and again if it closed."""

    def __init__(
        self,
        con: asyncpg.Connection | None = None,
        *,
        opener: Callable[[], Awaitable[asyncpg.Connection]] | None = None,
    ) -> None:
        self._con = con
        self._opener = opener
        self.mutex = asyncio.Lock()

    @property
    def reopens(self) -> bool:
        return self._opener is not None

    @property
    def con(self) -> asyncpg.Connection:
        if self._con is None:
            raise RuntimeError("connection not opened yet")
        return self._con

    async def get(self) -> asyncpg.Connection:
        if self._opener is not None and (self._con is None or self._con.is_closed()):
            self._con = await self._opener()
        return self.con

    def detach(self) -> asyncpg.Connection | None:
        """Take the connection away (to give it back for reuse): a late user gets
        "not opened yet", never the connection's next owner's session."""
        con, self._con = self._con, None
        return con

    async def close(self) -> None:
        con = self.detach()
        if con is not None and not con.is_closed():
            await close_connection(con, 5)


class _PostgresWriter:
    def __init__(
        self,
        store: PostgresCheckpointStore,
        tenant_id: str,
        run_id: str,
        node_id: str,
    ) -> None:
        self._db = store.db
        self._shared = store.connection
        self._args = (tenant_id, run_id, node_id)
        self._synchronous = store.synchronous
        self._tx = _NodeTransaction(store.db, tenant_id)

    async def connection(self) -> asyncpg.Connection:
        return await self._tx.connection()

    async def commit(self, cache_key: str, output: Any, output_digest: str) -> None:
        if self._tx.open:
            con = await self._tx.connection()
            try:
                await con.execute(
                    CHECKPOINT_UPSERT,
                    *self._args,
                    cache_key,
                    output_digest,
                    output,
                    self._synchronous,
                )
            except BaseException:
                await self._tx.finish(commit=False)
                raise
            await self._tx.finish(commit=True)
            return
        # No node transaction to join: the upsert is one statement, its own
        # transaction, which sets the tenant (as Database.transaction does) and
        # the commit mode itself. On the run's own connection (see session()):
        # one round trip, no pool acquire and reset.
        if self._shared is not None:
            args = (*self._args, cache_key, output_digest, output, self._synchronous)
            async with self._shared.mutex:
                con = await self._shared.get()
                try:
                    await con.execute(CHECKPOINT_UPSERT, *args)
                except Exception:
                    if not (self._shared.reopens and con.is_closed()):
                        raise
                    # The run's connection died (restart, idle kill): the upsert is
                    # idempotent, so it is sent once more on a new connection.
                    con = await self._shared.get()
                    await con.execute(CHECKPOINT_UPSERT, *args)
            return
        async with self._db.connection() as con:
            await con.execute(
                CHECKPOINT_UPSERT, *self._args, cache_key, output_digest, output, self._synchronous
            )

    async def abort(self) -> None:
        await self._tx.finish(commit=False)


class PostgresCheckpointStore:
    """Checkpoints in the `flow_run_checkpoint` table (migration 0050).

    By default a checkpoint transaction commits with synchronous_commit off:
    the commit returns before its WAL reaches disk, which takes most of the
    per-node cost away. What that risks, and what it does not:
    - a crash of the server process (even SIGKILL) loses nothing: the commit
      is in PostgreSQL's WAL buffers already;
    - a crash of PostgreSQL itself (or its machine) may lose the last few
      hundred milliseconds of commits, whole and in order: those nodes simply
      run again on retry, and their own database writes, committed in the same
      transaction, are lost with them, so nothing is applied twice.
    Set KAIREON_FLOW_CHECKPOINT_SYNC_COMMIT=true (synchronous=True) to wait
    for the disk on every checkpoint.

    `connection`: a connection of the run (the service passes the one holding
    the run's advisory lock) for checkpoints of nodes that opened no
    transaction. Without one, the runner's `session` opens a connection for
    the run at its first such checkpoint (outside the pool: a run may last
    hours) and closes it when the run ends; a writer used outside a session
    takes a pooled connection per checkpoint.
    """

    def __init__(
        self, db: Database, *, synchronous: bool = False, connection: SharedConnection | None = None
    ) -> None:
        self.db = db
        self.synchronous = "on" if synchronous else "off"
        self.connection = connection

    async def load(self, tenant_id: str, run_id: str) -> dict[str, Checkpoint]:
        if self.connection is not None:
            # The run's own connection, its tenant set for the session: one round
            # trip (a pooled transaction is five). One statement, one snapshot.
            async with self.connection.mutex:
                con = await self.connection.get()
                rows = await con.fetch(
                    _LOAD_CHECKPOINTS, tenant_id, run_id, timeout=self.db.command_timeout
                )
        else:
            async with self.db.transaction(tenant_id, readonly=True) as con:
                rows = await con.fetch(_LOAD_CHECKPOINTS, tenant_id, run_id)
        return {
            r["node_id"]: Checkpoint(
                r["node_id"], r["cache_key"], r["output_digest"], r["output"], r["created_at"]
            )
            for r in rows
        }

    def writer(self, tenant_id: str, run_id: str, node_id: str) -> CheckpointWriter:
        return _PostgresWriter(self, tenant_id, run_id, node_id)

    @contextlib.asynccontextmanager
    async def session(self, tenant_id: str, run_id: str) -> AsyncIterator[CheckpointStore]:
        if self.connection is not None:
            yield self
            return

        async def open_for_run() -> asyncpg.Connection:
            con = await self.db.dedicated_connection(application_name="kaireon-flow")
            # The connection serves this run only: its tenant holds for the session.
            await con.execute("SELECT set_config('kaireon.tenant_id', $1, false)", tenant_id)
            return con

        shared = SharedConnection(opener=open_for_run)
        try:
            yield PostgresCheckpointStore(
                self.db, synchronous=self.synchronous == "on", connection=shared
            )
        finally:
            await shared.close()

    async def clear(
        self, tenant_id: str, run_id: str, con: asyncpg.Connection | None = None
    ) -> int:
        """Delete a run's checkpoints, in `con`'s transaction when given."""
        sql = "DELETE FROM flow_run_checkpoint WHERE tenant_id = $1 AND run_id = $2"
        if con is not None:
            status = await con.execute(sql, tenant_id, run_id)
        else:
            async with self.db.transaction(tenant_id) as own:
                status = await own.execute(sql, tenant_id, run_id)
        return int(status.split()[-1])
