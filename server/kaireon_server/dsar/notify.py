"""PostgreSQL LISTEN/NOTIFY fan-out inside one server process.

One dedicated connection per process listens on `kaireon_dsar` (a request's
state changed: payload {"t": tenant, "i": id, "v": version}) and
`kaireon_dsar_jobs` (work is due). Watchers and workers only get woken: they
re-read the database, which is the truth, so a lost notification costs a poll
interval, never a state. If the connection drops, every waiter is woken (to
re-read) and the listener reconnects with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import asyncpg

log = logging.getLogger(__name__)

STATE_CHANNEL = "kaireon_dsar"
JOBS_CHANNEL = "kaireon_dsar_jobs"

Connect = Callable[[], Awaitable[asyncpg.Connection]]


class Subscription:
    """Wakes one watcher when its request changes."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def wake(self) -> None:
        self._event.set()

    async def wait(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._event.wait()
        self._event.clear()


class Notifier:
    def __init__(self, connect: Connect) -> None:
        self._connect = connect
        self._subscribers: dict[tuple[str, str], set[Subscription]] = {}
        self._work_events: list[asyncio.Event] = []
        self.connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="dsar-notifier")
        # Serve without notifications rather than not at all: waiters also poll.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await self.connected.wait()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def work_event(self) -> asyncio.Event:
        """An event set whenever a job may be due (one per worker)."""
        event = asyncio.Event()
        self._work_events.append(event)
        return event

    @contextlib.contextmanager
    def subscribe(self, tenant_id: str, request_id: str) -> Iterator[Subscription]:
        sub = Subscription()
        key = (tenant_id, request_id)
        self._subscribers.setdefault(key, set()).add(sub)
        try:
            yield sub
        finally:
            subs = self._subscribers.get(key)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subscribers[key]

    def _on_state(self, _con: Any, _pid: int, _channel: str, payload: str) -> None:
        try:
            message = json.loads(payload)
            key = (str(message["t"]), str(message["i"]))
        except (ValueError, KeyError, TypeError):
            return
        for sub in self._subscribers.get(key, ()):
            sub.wake()

    def _on_jobs(self, _con: Any, _pid: int, _channel: str, _payload: str) -> None:
        for event in self._work_events:
            event.set()

    def _wake_all(self) -> None:
        for event in self._work_events:
            event.set()
        for subs in self._subscribers.values():
            for sub in subs:
                sub.wake()

    async def _run(self) -> None:
        delay = 0.2
        while True:
            con: asyncpg.Connection | None = None
            try:
                con = await self._connect()
                lost = asyncio.Event()
                con.add_termination_listener(lambda _c, lost=lost: lost.set())
                await con.add_listener(STATE_CHANNEL, self._on_state)
                await con.add_listener(JOBS_CHANNEL, self._on_jobs)
                self.connected.set()
                delay = 0.2
                # Anything that changed while we were not listening: go and look.
                self._wake_all()
                while not lost.is_set():
                    # A silent network drop does not terminate the connection: probe it.
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(15):
                            await lost.wait()
                    if not lost.is_set():
                        async with asyncio.timeout(5):
                            await con.fetchval("SELECT 1")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # reconnect on any failure; the type only is logged
                log.warning(
                    "dsar notifier lost its connection", extra={"error_type": type(exc).__name__}
                )
            finally:
                self.connected.clear()
                if con is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(con.close(), 2)
            self._wake_all()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
