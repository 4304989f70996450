"""The asyncpg pool and the one place that opens tenant-scoped transactions.

Two roles (migration 0100): the *owner* (DATABASE_URL) migrates and seeds; the
pool connects as the application role `kaireon_app`, which row-level security
confines to the tenant of the current transaction and which cannot bypass it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl, quote, urlencode, urlparse, urlunparse

import asyncpg

from kaireon_server.platform.config import Settings
from kaireon_server.platform.db.dynamic_tables import secure_dynamic_tables
from kaireon_server.platform.db.embedded import EmbeddedPostgres
from kaireon_server.platform.db.migrate import apply_migrations
from kaireon_server.platform.env import EnvReader
from kaireon_server.platform.errors import ConfigurationError, ResourceExhausted, Unavailable
from kaireon_server.platform.observability import metrics
from kaireon_server.platform.observability.sql import InstrumentedConnection

log = logging.getLogger(__name__)

# The role the pool runs as; created and granted by migration 0100.
APP_ROLE = "kaireon_app"
# Leased dedicated connections (Database.leased_connection): how many are kept
# idle per use, for how long, and the bound of the reset that readies one.
MAX_IDLE = 8
IDLE_SECONDS = 10.0
RESET_TIMEOUT = 5.0
# asyncpg prepares and keeps statements up to 15 KB only; a longer one is
# planned again at every call. The generated statements are the longest and
# the dearest to plan: a DSAR export's read is 15 KB or more for the built-in
# data map and takes about 6 ms to plan, more than it takes to run.
STATEMENT_CACHE_BYTES = 512 * 1024

# PostgreSQL's side of every connection the server opens notices a client
# that vanished without closing (a silent partition, a dead host) within about
# 25-30 s instead of the operating system's two hours, so the session ends and
# a flow run's advisory lock is released for another replica (docs/SCALING.md).
# Session settings, sent at connect; ignored over Unix sockets.
PEER_LOSS_SETTINGS = {
    "tcp_keepalives_idle": "10",
    "tcp_keepalives_interval": "5",
    "tcp_keepalives_count": "3",
    "tcp_user_timeout": "30000",
}

Isolation = Literal["read_committed", "repeatable_read", "serializable"]

# The task of a request that must not queue for a connection (set by
# platform/admission.py around unary calls). A task, not a flag: tasks a
# handler starts (a flow run) copy the context but are other tasks, so
# background work keeps waiting for the pool as before.
_fail_fast: ContextVar[asyncio.Task[Any] | None] = ContextVar("kaireon_fail_fast", default=None)


@contextmanager
def fail_fast_scope() -> Iterator[None]:
    """Within it, this task's pool acquires are refused at once when they would
    queue behind `Database.max_waiters` others."""
    token = _fail_fast.set(asyncio.current_task())
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):  # reset from another context
            _fail_fast.reset(token)


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


# True while releasing a connection that ran only single statements leaving no
# session state behind (Database.single_statements): the pool then skips its
# reset query, a round trip. Set only around the release itself, so no other
# connection of the task is released without its reset.
_SESSION_CLEAN: ContextVar[bool] = ContextVar("kaireon_session_clean", default=False)


async def _reset_session(con: asyncpg.Connection) -> None:
    """The pool's reset (after asyncpg rolled back any open transaction): the
    default reset query unless the session is known to be clean."""
    if _SESSION_CLEAN.get():
        return
    query = con.get_reset_query()
    if query:
        await con.execute(query)


def app_role_dsn(owner_dsn: str, password: str | None = None) -> str:
    """The owner's DSN with the application role as user (and its password, if any)."""
    parts = urlparse(owner_dsn)
    host = parts.netloc.rpartition("@")[2]
    user = quote(APP_ROLE) + (f":{quote(password, safe='')}" if password else "")
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k not in {"user", "password"}])
    return urlunparse(parts._replace(netloc=f"{user}@{host}", query=query))


# Errors after which a pooled connection cannot be trusted: a statement may
# still be in flight on it (a stalled socket, a cancelled call), and ROLLBACK
# or the pool's reset would wait behind it; or asyncpg lost track of its
# protocol state (seen when PostgreSQL shuts down mid-statement).
_ABANDON = (asyncio.CancelledError, TimeoutError, GeneratorExit, asyncpg.InternalClientError)
_DB_ERRORS = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)


@asynccontextmanager
async def _committed(
    con: asyncpg.Connection, isolation: Isolation, readonly: bool
) -> AsyncIterator[None]:
    """A transaction around the block: committed when it ends, rolled back on an
    error. On a cancellation or timeout nothing is sent (a statement may still be
    in flight): the caller ends or discards the session."""
    tx = con.transaction(isolation=isolation, readonly=readonly)
    await tx.start()
    committing = False
    try:
        yield
        committing = True
        await tx.commit()
    except _ABANDON:
        raise
    except BaseException:
        # A failed COMMIT has ended the transaction already.
        if not committing and not con.is_closed():
            try:
                await tx.rollback()
            except _DB_ERRORS:
                con.terminate()
        raise


@dataclass
class Database:
    pool: asyncpg.Pool
    # The owner's DSN (migrations, seeding, DDL) and the pool's (the application role).
    dsn: str = field(repr=False)
    app_dsn: str = field(repr=False)
    acquire_timeout: float
    embedded: EmbeddedPostgres | None = None
    # The pool's client-side bound of a statement (Settings.db_command_timeout).
    command_timeout: float | None = None
    # A request's acquire that would queue behind this many others is refused
    # at once (KAIREON_DB_POOL_MAX_WAITERS), with this retry hint in seconds.
    max_waiters: int = 40
    retry_after: float = 1.0
    # Acquires in progress (waiting for or opening a connection).
    _acquiring: int = field(default=0, init=False, repr=False)
    # The health ping's own connection, outside the pool: a busy pool must not
    # make the instance look dead.
    _ping_con: asyncpg.Connection | None = field(default=None, init=False, repr=False)
    _ping_lock: asyncio.Lock = field(default_factory=asyncio.Lock, init=False, repr=False)
    # Dedicated connections given back for reuse (leased_connection), newest last,
    # with the monotonic time each was given back.
    _idle: dict[str, list[tuple[float, asyncpg.Connection]]] = field(
        default_factory=dict, init=False, repr=False
    )

    def _pool_gauges(self) -> None:
        if not metrics.recording():
            return
        pool = self.pool
        size = pool.get_size()
        metrics.DB_POOL_SIZE.set(size)
        metrics.DB_POOL_MAX.set(pool.get_max_size())
        metrics.DB_POOL_IN_USE.set(size - pool.get_idle_size())
        metrics.DB_POOL_WAITING.set(self._acquiring)

    def _refuse_if_queueing(self) -> None:
        if _fail_fast.get() is not asyncio.current_task():
            return
        free = self.pool.get_idle_size() + self.pool.get_max_size() - self.pool.get_size()
        if self._acquiring >= free and self._acquiring - free >= self.max_waiters:
            metrics.ADMISSION_REFUSED.labels("DB_POOL_BUSY").inc()
            raise ResourceExhausted(
                "database connection pool busy; retry later",
                reason="DB_POOL_BUSY",
                retry_after=self.retry_after,
            )

    @asynccontextmanager
    async def _acquire(self, *, clean: bool = False) -> AsyncIterator[asyncpg.Connection]:
        self._refuse_if_queueing()
        self._acquiring += 1
        self._pool_gauges()
        began = time.perf_counter()
        try:
            con = await self.pool.acquire(timeout=self.acquire_timeout)
        except TimeoutError:
            if self.pool.get_size() < self.pool.get_max_size():
                metrics.DB_CONNECTION_ERRORS.labels("connect_timeout").inc()
                # A free slot, but opening its connection took too long: the
                # database is unreachable, not busy.
                raise Unavailable(
                    "database unreachable; retry later", reason="DB_UNAVAILABLE"
                ) from None
            # Backpressure: a saturated pool answers at once instead of queueing forever.
            metrics.ADMISSION_REFUSED.labels("DB_POOL_EXHAUSTED").inc()
            raise ResourceExhausted(
                "database connection pool exhausted; retry later",
                reason="DB_POOL_EXHAUSTED",
                retry_after=self.retry_after,
            ) from None
        except _DB_ERRORS:
            metrics.DB_CONNECTION_ERRORS.labels("connect").inc()
            raise
        finally:
            self._acquiring -= 1
            metrics.DB_ACQUIRE.observe(time.perf_counter() - began)
            self._pool_gauges()
        failed = False
        try:
            yield con
        except _ABANDON:
            # Ending the session makes PostgreSQL roll back; the pool opens a new one.
            con.terminate()
            raise
        except BaseException:
            failed = True
            raise
        finally:
            # A block that failed midway may have left session state behind (a
            # tenant set for the session before the error): reset it whatever
            # the block promised, and so for a transaction left open.
            clean = clean and not failed and not con.is_closed() and not con.is_in_transaction()
            await self._release(con, clean=clean)

    async def _release(self, con: asyncpg.Connection, *, clean: bool = False) -> None:
        token = _SESSION_CLEAN.set(clean)
        try:
            await self.pool.release(con)
            self._pool_gauges()
        except _DB_ERRORS as exc:
            metrics.DB_CONNECTION_ERRORS.labels("discarded").inc()
            # asyncpg terminated the connection after a failed reset; the work
            # done on it is committed or rolled back already, so the call
            # keeps its own outcome.
            log.warning("database connection discarded", extra={"error_type": type(exc).__name__})
        finally:
            _SESSION_CLEAN.reset(token)

    @asynccontextmanager
    async def single_statements(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection for statements that are each their own transaction
        and leave no session state behind (no SET, LISTEN, cursor or advisory lock):
        one that binds the tenant sets it itself, locally (kaireon_provenance_bundle).
        It goes back to the pool without the reset query, so a one-statement read
        costs one round trip. No tenant is set: row-level security shows nothing
        to a statement that does not set one."""
        async with self._acquire(clean=True) as con:
            yield con

    @asynccontextmanager
    async def transaction(
        self, tenant_id: str, *, isolation: Isolation = "read_committed", readonly: bool = False
    ) -> AsyncIterator[asyncpg.Connection]:
        """A transaction bound to one tenant: every statement in it runs with
        `kaireon.tenant_id` set (SET LOCAL), which row-level security keys on.
        Rolls back on any exception (by ending the session when the connection
        may be stuck: a timeout or a cancelled call)."""
        async with self._acquire() as con, _committed(con, isolation, readonly):
            await con.execute("SELECT set_config('kaireon.tenant_id', $1, true)", tenant_id)
            yield con

    @asynccontextmanager
    async def transaction_on(self, con: asyncpg.Connection) -> AsyncIterator[asyncpg.Connection]:
        """A read-committed transaction on a dedicated connection whose session has
        its tenant set already (a flow run's lock connection): BEGIN and COMMIT, no
        tenant statement, no pool acquire or reset. Bounded like a pooled
        transaction's statements. Rolled back on an error; on a cancellation or
        timeout the session is ended instead (a statement may be in flight)."""
        try:
            async with (
                asyncio.timeout(self.command_timeout),
                _committed(con, "read_committed", False),
            ):
                yield con
        except _ABANDON:
            con.terminate()
            raise

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A plain pooled connection with no tenant set: row-level security shows it
        no tenant rows. For health checks, advisory locks and the maintenance
        functions of migration 0100."""
        async with self._acquire() as con:
            yield con

    async def dedicated_connection(self, application_name: str = "kaireon") -> asyncpg.Connection:
        """A connection outside the pool (LISTEN, advisory locks held for a long
        time, long cursors), as the application role with the pool's json codecs;
        the caller closes it. Opening it is bounded like a pool acquire; its
        statements have no default bound (long exports), so callers pass
        `timeout=` where a stalled socket must not hang them."""
        con: asyncpg.Connection = await asyncpg.connect(
            self.app_dsn,
            server_settings={**PEER_LOSS_SETTINGS, "application_name": application_name},
            timeout=self.acquire_timeout,
            max_cacheable_statement_size=STATEMENT_CACHE_BYTES,
        )
        await _init_connection(con)
        return con

    async def leased_connection(self, application_name: str) -> asyncpg.Connection:
        """A dedicated connection, reused when one was given back recently.

        For session-scoped work started often (a flow run's advisory lock):
        opening a connection is a connect, the start-up and authentication
        exchange and the codec set-up, several times the cost of the work.
        Give it back with `give_back`, never close it yourself. A connection
        idle longer than IDLE_SECONDS is closed, not reused: after a failover
        an old one would fail its first statement.
        """
        idle = self._idle.get(application_name, [])
        now = time.monotonic()
        while idle:
            since, con = idle.pop()
            if not con.is_closed() and now - since < IDLE_SECONDS:
                return con
            con.terminate()
        return await self.dedicated_connection(application_name)

    async def give_back(
        self, con: asyncpg.Connection, application_name: str, *, reset: bool = True
    ) -> None:
        """Reset a leased connection (asyncpg's reset: an open transaction rolled
        back, every advisory lock released, every setting back to its start-up
        value, LISTEN dropped) and keep it for the next lease; closed instead
        when the reset fails or MAX_IDLE are kept already.

        `reset=False` skips the reset's round trip for a caller whose every change
        ended with its transactions (transaction-local settings and advisory
        locks, no LISTEN, no session state); a connection still inside a
        transaction is reset all the same."""
        if con.is_closed():
            return
        try:
            if reset or con.is_in_transaction():
                await con.reset(timeout=RESET_TIMEOUT)
        except Exception:
            # Ending the session releases whatever the reset could not.
            con.terminate()
            return
        except BaseException:
            con.terminate()
            raise
        idle = self._idle.setdefault(application_name, [])
        if len(idle) >= MAX_IDLE:
            await close_connection(con, RESET_TIMEOUT)
            return
        idle.append((time.monotonic(), con))

    def _drop_idle(self) -> None:
        for idle in self._idle.values():
            for _since, con in idle:
                con.terminate()
        self._idle.clear()

    @asynccontextmanager
    async def owner_connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A connection as the owner, outside row-level security: start-up work only
        (migrations, the demo seed, DDL of dynamic tables) and tools; never on a
        request path (a test keeps it out of the capability packages)."""
        con: asyncpg.Connection = await asyncpg.connect(
            self.dsn, server_settings={"application_name": "kaireon-owner"}
        )
        try:
            await _init_connection(con)
            yield con
        finally:
            await con.close()

    async def ping(self, timeout: float = 2.0) -> bool:
        """SELECT 1 on the health connection (opened again when lost), not a pooled one."""
        async with self._ping_lock:
            try:
                async with asyncio.timeout(timeout):
                    if self._ping_con is None or self._ping_con.is_closed():
                        self._ping_con = await asyncpg.connect(
                            self.app_dsn,
                            server_settings={
                                **PEER_LOSS_SETTINGS,
                                "application_name": "kaireon-health",
                            },
                            timeout=timeout,
                        )
                    await self._ping_con.fetchval("SELECT 1")
            except _DB_ERRORS:
                self._drop_ping_connection()
                return False
            except Exception as exc:  # whatever went wrong, the database did not answer
                log.warning("database ping failed", extra={"error_type": type(exc).__name__})
                self._drop_ping_connection()
                return False
            return True

    def _drop_ping_connection(self) -> None:
        # terminate, not close: the connection may be stuck in a statement.
        if self._ping_con is not None:
            self._ping_con.terminate()
            self._ping_con = None

    async def close(self) -> None:
        self._drop_ping_connection()
        self._drop_idle()
        try:
            async with asyncio.timeout(10):
                await self.pool.close()
        except TimeoutError:
            self.pool.terminate()
        if self.embedded is not None:
            await self.embedded.stop()


async def close_connection(con: asyncpg.Connection, timeout: float) -> None:
    """Close a connection outside the pool politely within `timeout` seconds,
    else drop its socket (PostgreSQL then ends the session all the same)."""
    try:
        async with asyncio.timeout(timeout):
            await con.close()
    except Exception:
        con.terminate()


async def _check_app_role(con: asyncpg.Connection) -> None:
    """Refuse a pool role that row-level security would not confine."""
    row = await con.fetchrow(
        "SELECT current_user AS name, rolsuper, rolbypassrls,"
        "       EXISTS (SELECT 1 FROM pg_tables WHERE tableowner = current_user"
        "                 AND tablename = 'audit_log') AS owner"
        "  FROM pg_roles WHERE rolname = current_user"
    )
    if row is None or row["rolsuper"] or row["rolbypassrls"] or row["owner"]:
        raise ConfigurationError(
            "the application database role must not be a superuser, have BYPASSRLS or own "
            f"the tables (row-level security would not apply); got role {row and row['name']!r}"
        )


async def connect_database(settings: Settings, *, migrate: bool = True) -> Database:
    """Start the embedded server when DATABASE_URL is unset, migrate as the owner,
    then open the pool as the application role."""
    embedded: EmbeddedPostgres | None = None
    dsn = settings.database_url
    if dsn is None:
        embedded = EmbeddedPostgres(settings.data_dir)
        dsn = await embedded.start()
    app_dsn = settings.app_database_url or app_role_dsn(dsn, settings.app_database_password)
    server_settings: dict[str, Any] = {
        **PEER_LOSS_SETTINGS,
        "application_name": "kaireon",
        "statement_timeout": str(settings.db_statement_timeout_ms),
    }
    try:
        if migrate:
            owner = await asyncpg.connect(dsn, server_settings={"application_name": "kaireon"})
            try:
                await apply_migrations(owner)
                # ds_* tables appear after the migrations: secure any that lack RLS.
                await secure_dynamic_tables(owner)
            finally:
                await owner.close()
        pool = await asyncpg.create_pool(
            app_dsn,
            min_size=settings.db_pool_min,
            max_size=settings.db_pool_max,
            init=_init_connection,
            reset=_reset_session,
            server_settings=server_settings,
            # Statement time by repository function (platform/observability/sql.py).
            connection_class=InstrumentedConnection
            if metrics.wanted(settings.env)
            else asyncpg.Connection,
            command_timeout=settings.db_command_timeout,
            max_cacheable_statement_size=STATEMENT_CACHE_BYTES,
        )
        try:
            async with pool.acquire() as con:
                await _check_app_role(con)
        except BaseException:
            await pool.close()
            raise
    except BaseException:
        if embedded is not None:
            await embedded.stop()
        raise
    return Database(
        pool=pool,
        dsn=dsn,
        app_dsn=app_dsn,
        acquire_timeout=settings.db_acquire_timeout,
        embedded=embedded,
        command_timeout=settings.db_command_timeout,
        max_waiters=_max_waiters(settings),
    )


def _max_waiters(settings: Settings) -> int:
    """KAIREON_DB_POOL_MAX_WAITERS: default 4 x the pool's size, a queue a few
    statements deep: a burst is absorbed (20 concurrent erasures on a pool of
    10 all pass), an overload is refused instead of waiting out the acquire timeout."""
    return EnvReader(settings.env).integer(
        "KAIREON_DB_POOL_MAX_WAITERS", 4 * settings.db_pool_max, minimum=0
    )
