"""Cross-process signals through PostgreSQL LISTEN/NOTIFY on channel `kaireon_flow`.

Two kinds: "event" (a run's event log grew: WatchRun streams wake up and read
it) and "cancel" (CancelRun: the process executing the run interrupts it).
Payloads carry only the tenant and run ids; the data is read from the tables,
so a notification lost while the listener reconnects delays a watcher by at
most its poll interval and loses nothing. The LISTEN connection is the
process's shared one (platform/db/listener.py), which probes it and
reconnects with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Iterator

import asyncpg

from kaireon_server.platform.db.listener import Listener

CHANNEL = "kaireon_flow"

RunKey = tuple[str, str]


def payload(tenant_id: str, run_id: str, kind: str) -> str:
    return json.dumps({"t": tenant_id, "r": run_id, "k": kind}, separators=(",", ":"))


async def notify(con: asyncpg.Connection, tenant_id: str, run_id: str, kind: str) -> None:
    """Queue a notification in `con`'s transaction (delivered at commit)."""
    await con.execute("SELECT pg_notify($1, $2)", CHANNEL, payload(tenant_id, run_id, kind))


class FlowNotifier:
    def __init__(self, listener: Listener) -> None:
        self._listener = listener
        self._watchers: dict[RunKey, set[asyncio.Event]] = {}
        self._cancel_callbacks: list[Callable[[str, str], object]] = []
        listener.subscribe(CHANNEL, self._dispatch, self._wake_all)

    @property
    def connected(self) -> asyncio.Event:
        return self._listener.connected

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

    def _wake_all(self) -> None:
        # Anything may have happened while disconnected: wake every watcher.
        for key in list(self._watchers):
            self.wake(*key)

    def _dispatch(self, payload: str) -> None:
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
        await self._listener.start()

    async def stop(self) -> None:
        await self._listener.stop()
