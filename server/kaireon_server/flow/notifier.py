"""Cross-process signals through PostgreSQL LISTEN/NOTIFY on channel `kaireon_flow`.

Two kinds: "event" (a run's event log grew: WatchRun streams wake up and read
it) and "cancel" (CancelRun: the process executing the run interrupts it).
Payloads carry only the tenant and run ids; the data is read from the tables,
so a notification lost while the listener reconnects delays a watcher by at
most its poll interval and loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import asyncpg

from kaireon_server.flow.locks import dedicated_connection
from kaireon_server.platform.db import Database

log = logging.getLogger(__name__)

CHANNEL = "kaireon_flow"
RECONNECT_SECONDS = 1.0

RunKey = tuple[str, str]


def payload(tenant_id: str, run_id: str, kind: str) -> str:
    return json.dumps({"t": tenant_id, "r": run_id, "k": kind}, separators=(",", ":"))


async def notify(con: asyncpg.Connection, tenant_id: str, run_id: str, kind: str) -> None:
    """Queue a notification in `con`'s transaction (delivered at commit)."""
    await con.execute("SELECT pg_notify($1, $2)", CHANNEL, payload(tenant_id, run_id, kind))


class FlowNotifier:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._con: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._watchers: dict[RunKey, set[asyncio.Event]] = {}
        self._cancel_callbacks: list[Callable[[str, str], object]] = []
        self.connected = asyncio.Event()

    def on_cancel(self, callback: Callable[[str, str], object]) -> None:
        self._cancel_callbacks.append(callback)

    @contextlib.contextmanager
    def subscribe(self, tenant_id: str, run_id: str) -> Iterator[asyncio.Event]:
        """An event set whenever the run's event log may have grown."""
        event = asyncio.Event()
        key = (tenant_id, run_id)
        self._watchers.setdefault(key, set()).add(event)
        try:
            yield event
        finally:
            watchers = self._watchers.get(key)
            if watchers is not None:
                watchers.discard(event)
                if not watchers:
                    del self._watchers[key]

    def wake(self, tenant_id: str, run_id: str) -> None:
        for event in self._watchers.get((tenant_id, run_id), ()):
            event.set()

    def _dispatch(self, con: Any, pid: int, channel: str, payload: str) -> None:
        try:
            message = json.loads(payload)
            tenant_id, run_id, kind = str(message["t"]), str(message["r"]), str(message["k"])
        except (ValueError, KeyError, TypeError):
            return
        if kind == "event":
            self.wake(tenant_id, run_id)
        elif kind == "cancel":
            for callback in self._cancel_callbacks:
                callback(tenant_id, run_id)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._listen_forever())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._close()

    async def _close(self) -> None:
        con, self._con = self._con, None
        self.connected.clear()
        if con is not None and not con.is_closed():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(con.close(), 2)

    async def _listen_forever(self) -> None:
        while True:
            try:
                if self._con is None or self._con.is_closed():
                    await self._close()
                    self._con = await dedicated_connection(self._db)
                    await self._con.add_listener(CHANNEL, self._dispatch)
                    self.connected.set()
                    # Anything may have happened while disconnected: wake every watcher.
                    for key in list(self._watchers):
                        self.wake(*key)
                await asyncio.sleep(RECONNECT_SECONDS)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("flow listener reconnecting", extra={"error_type": type(exc).__name__})
                await self._close()
                await asyncio.sleep(RECONNECT_SECONDS)
