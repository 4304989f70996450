"""A watcher is not woken to re-read a version it has read already: the
notification names its version (the create's own one often lands after the
watch's first read). Real NOTIFYs through the process's shared listener."""

from __future__ import annotations

import asyncio
import json
import time

import asyncpg

from kaireon_server.dsar.notify import STATE_CHANNEL, Notifier, Subscription
from kaireon_server.platform.db.listener import Listener


async def _waited(sub: Subscription, timeout: float, seen: int) -> float:
    started = time.monotonic()
    await sub.wait(timeout, seen=seen)
    return time.monotonic() - started


async def test_a_seen_version_does_not_wake_a_newer_one_or_a_blind_wake_does(
    database_url: str,
) -> None:
    notifier = Notifier(Listener(lambda: asyncpg.connect(database_url)))
    await notifier.start()
    sender = await asyncpg.connect(database_url)

    async def notify(payload: object) -> None:
        text = payload if isinstance(payload, str) else json.dumps(payload)
        await sender.execute("SELECT pg_notify($1, $2)", STATE_CHANNEL, text)

    try:
        await asyncio.wait_for(notifier.connected.wait(), 10)
        with notifier.subscribe("t-notify", "r-1") as sub:
            await notify({"t": "t-notify", "i": "r-1", "v": 3})
            # Seen 3 already: the wait runs to its timeout (no re-read).
            assert await _waited(sub, 0.5, seen=3) >= 0.45
            # Seen only 2: version 3 is news, at once.
            assert await _waited(sub, 5.0, seen=2) < 4.0
            # Another request's notification is not this watcher's.
            await notify({"t": "t-notify", "i": "r-2", "v": 9})
            assert await _waited(sub, 0.5, seen=3) >= 0.45
            # A version that is not an integer cannot be trusted to skip: re-read.
            await notify({"t": "t-notify", "i": "r-1", "v": "3"})
            assert await _waited(sub, 5.0, seen=3) < 4.0
            await notify({"t": "t-notify", "i": "r-1", "v": 4})
            assert await _waited(sub, 5.0, seen=3) < 4.0
    finally:
        await sender.close()
        await notifier.stop()
