"""DSAR wake-ups over the process's shared LISTEN connection (platform/db/listener.py).

Two channels: `kaireon_dsar` (a request's state changed: payload {"t": tenant,
"i": id, "v": version}) and `kaireon_dsar_jobs` (work is due). Watchers and
workers only get woken: they re-read the database, which is the truth, so a
lost notification costs a poll interval, never a state. A watcher that has
read the version a notification names skips that re-read. After every
(re)connect of the listener every waiter is woken to re-read.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator

from kaireon_server.platform.db.listener import Listener

STATE_CHANNEL = "kaireon_dsar"
JOBS_CHANNEL = "kaireon_dsar_jobs"


class Subscription:
    """Wakes one watcher when its request changes.

    A notification names the version it announces: a watcher that has read
    that version already (the create's own notification often lands after the
    watch's first read) is not woken to read it again. A wake-up without a
    version (the listener reconnected) always wakes."""

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self._latest = 0  # the newest version notified
        self._blind = False  # woken with no version since the last wait

    def wake(self, version: int | None = None) -> None:
        if version is None:
            self._blind = True
        else:
            self._latest = max(self._latest, version)
        self._event.set()

    async def wait(self, timeout: float, *, seen: int) -> None:
        """Until a version newer than `seen` is notified, a blind wake-up, or
        `timeout` (the caller then reads anyway: the database is the truth)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while not self._news(seen):
                    await self._event.wait()
                    self._event.clear()
        self._event.clear()

    def _news(self, seen: int) -> bool:
        if self._blind:
            self._blind = False
            return True
        return self._latest > seen


class Notifier:
    def __init__(self, listener: Listener) -> None:
        self._listener = listener
        self._subscribers: dict[tuple[str, str], set[Subscription]] = {}
        self._work_events: list[asyncio.Event] = []
        listener.subscribe(STATE_CHANNEL, self._on_state, self._wake_all)
        listener.subscribe(JOBS_CHANNEL, self._on_jobs)

    @property
    def connected(self) -> asyncio.Event:
        return self._listener.connected

    async def start(self) -> None:
        await self._listener.start()

    async def stop(self) -> None:
        await self._listener.stop()

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

    def _on_state(self, payload: str) -> None:
        try:
            message = json.loads(payload)
            key = (str(message["t"]), str(message["i"]))
            version = message.get("v")
        except (ValueError, KeyError, TypeError, AttributeError):
            return
        # A version that is not a plain integer: wake blind (re-read), never skip.
        seen = version if type(version) is int else None
        for sub in self._subscribers.get(key, ()):
            sub.wake(seen)

    def _on_jobs(self, _payload: str) -> None:
        for event in self._work_events:
            event.set()

    def _wake_all(self) -> None:
        for event in self._work_events:
            event.set()
        for subs in self._subscribers.values():
            for sub in subs:
                sub.wake()
