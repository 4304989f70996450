"""One PostgreSQL LISTEN connection per server process, shared by every capability.

Capabilities subscribe by channel (`kaireon_dsar`, `kaireon_dsar_jobs`,
`kaireon_flow`, ...) with a callback for payloads and one for reconnects.
Notifications only wake: subscribers re-read the database, which is the
truth, so a notification lost while the connection was down costs a poll
interval, never a state. That is why every subscriber is woken after each
(re)connect.

A connection dropped by the network without a FIN is not noticed by asyncpg
(no termination callback, `is_closed()` stays False): the connection is
probed with `SELECT 1` every `probe_seconds`, and a probe that fails or does
not answer within `probe_timeout` counts as lost. Reconnects back off
exponentially from `min_backoff` to `max_backoff`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg

from kaireon_server.platform.db.database import Database, close_connection
from kaireon_server.platform.tasks import cancel_and_wait

log = logging.getLogger(__name__)

APPLICATION_NAME = "kaireon-listen"

Connect = Callable[[], Awaitable[asyncpg.Connection]]
OnNotify = Callable[[str], None]
OnReconnect = Callable[[], None]


@dataclass(frozen=True)
class _Subscriber:
    channel: str
    on_notify: OnNotify
    on_reconnect: OnReconnect


class Listener:
    """The process's LISTEN connection. Subscribe at build time, before `start()`.

    `start()`/`stop()` are counted: every user starts and stops it, and the
    connection lives from the first start to the last stop.
    """

    def __init__(
        self,
        connect: Connect,
        *,
        probe_seconds: float = 15.0,
        probe_timeout: float = 5.0,
        min_backoff: float = 0.2,
        max_backoff: float = 5.0,
    ) -> None:
        self._connect = connect
        self._probe_seconds = probe_seconds
        self._probe_timeout = probe_timeout
        self._min_backoff = min_backoff
        self._max_backoff = max_backoff
        self._subscribers: list[_Subscriber] = []
        self._users = 0
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()
        # Completed (re)connects: lets tests and health see a reconnect happen.
        self.connects = 0

    @classmethod
    def for_database(cls, db: Database, **options: float) -> Listener:
        return cls(lambda: db.dedicated_connection(application_name=APPLICATION_NAME), **options)

    def subscribe(
        self, channel: str, on_notify: OnNotify, on_reconnect: OnReconnect = lambda: None
    ) -> None:
        """Call `on_notify(payload)` for each notification on `channel`, and
        `on_reconnect()` after every (re)connect (state may have changed unseen)."""
        if self._task is not None:
            # The channel list is fixed per connection; capabilities subscribe when built.
            raise RuntimeError("subscribe before the listener starts")
        self._subscribers.append(_Subscriber(channel, on_notify, on_reconnect))

    @property
    def channels(self) -> list[str]:
        return sorted({s.channel for s in self._subscribers})

    async def start(self, wait: float = 5.0) -> None:
        """Start (first caller) and wait up to `wait` s for the connection. Serving
        without notifications beats not serving: every subscriber also polls."""
        self._users += 1
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="kaireon-listener")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                await self.connected.wait()

    async def stop(self) -> None:
        self._users = max(0, self._users - 1)
        if self._users or self._task is None:
            return
        task, self._task = self._task, None
        await cancel_and_wait(task)

    def _dispatch(self, _con: Any, _pid: int, channel: str, payload: str) -> None:
        for sub in self._subscribers:
            if sub.channel == channel:
                self._call(sub.on_notify, payload)

    def _wake_all(self) -> None:
        for sub in self._subscribers:
            self._call(sub.on_reconnect)

    @staticmethod
    def _call(callback: Callable[..., None], *args: str) -> None:
        # One faulty subscriber must not starve the others nor kill the connection.
        try:
            callback(*args)
        except Exception as exc:
            log.warning("listener subscriber failed", extra={"error_type": type(exc).__name__})

    async def _run(self) -> None:
        delay = self._min_backoff
        while True:
            con: asyncpg.Connection | None = None
            try:
                con = await self._connect()
                lost = asyncio.Event()
                con.add_termination_listener(lambda _c, lost=lost: lost.set())
                for channel in self.channels:
                    await con.add_listener(channel, self._dispatch)
                self.connects += 1
                self.connected.set()
                delay = self._min_backoff
                # Anything that changed while we were not listening: go and look.
                self._wake_all()
                while not lost.is_set():
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self._probe_seconds):
                            await lost.wait()
                    if not lost.is_set():
                        # A silent network drop does not terminate the connection.
                        await con.fetchval("SELECT 1", timeout=self._probe_timeout)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # reconnect on any failure; the type only is logged
                log.warning(
                    "listener lost its connection", extra={"error_type": type(exc).__name__}
                )
            finally:
                self.connected.clear()
                if con is not None:
                    await close_connection(con, 2)
            self._wake_all()
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._max_backoff)
