"""The integrator stops when told, even when a wake-up arrives in the same instant.

On Python 3.11, `asyncio.wait_for` returns the inner result instead of raising
when its caller is cancelled just as the inner await completes: the integrator's
loop, built on it, swallowed its own cancellation and `stop()` waited forever
(a 120-second teardown hang in CI, after a DSAR export had woken it).
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from kaireon_server.audit import tlog
from kaireon_server.platform.db import Database


async def test_stop_right_after_a_wake_up_returns(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="kaireon_server.platform.tasks")
    for _ in range(20):
        integrator = tlog.Integrator(db, tlog.TlogSettings(interval=60.0))
        integrator.start()
        await asyncio.sleep(0.01)  # parked in its wait for a wake-up
        integrator.wake()
        await asyncio.sleep(0)  # the wait completes; its result is not yet delivered
        async with asyncio.timeout(30):
            await integrator.stop()
        assert integrator._task is None
    # The first cancellation was obeyed: never re-cancelled (platform/tasks.py).
    assert not [r for r in caplog.records if "ignored its cancellation" in r.getMessage()]
