"""cancel_and_wait: the one way background loops are stopped."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest

from kaireon_server.platform import tasks
from kaireon_server.platform.tasks import cancel_and_wait


async def test_cancels_and_waits_for_every_task() -> None:
    ended: list[str] = []

    async def loop(name: str) -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            await asyncio.sleep(0.01)  # clean-up that takes a moment
            ended.append(name)

    a, b = asyncio.create_task(loop("a")), asyncio.create_task(loop("b"))
    await asyncio.sleep(0)
    await cancel_and_wait(a, None, b)
    assert sorted(ended) == ["a", "b"]
    assert a.cancelled() and b.cancelled()


async def test_a_task_that_swallows_its_cancellation_is_cancelled_again(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(tasks, "RECANCEL_SECONDS", 0.05)
    swallowed = 0

    async def stubborn() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                swallowed += 1
                if swallowed == 1:
                    continue  # what a loop on 3.11's wait_for did by accident
                raise

    task = asyncio.create_task(stubborn(), name="stubborn-loop")
    await asyncio.sleep(0)
    with caplog.at_level(logging.WARNING, logger="kaireon_server.platform.tasks"):
        async with asyncio.timeout(5):
            await cancel_and_wait(task)
    assert swallowed == 2 and task.cancelled()
    [record] = [r for r in caplog.records if "ignored its cancellation" in r.getMessage()]
    assert record.task == "stubborn-loop"  # type: ignore[attr-defined]


async def test_the_callers_own_cancellation_is_not_swallowed() -> None:
    release = asyncio.Event()

    async def slow_to_end() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            await release.wait()

    task = asyncio.create_task(slow_to_end())
    await asyncio.sleep(0)
    stopper = asyncio.create_task(cancel_and_wait(task))
    await asyncio.sleep(0.01)
    stopper.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stopper
    assert not task.done()  # still ending; the caller gave up on waiting for it
    release.set()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_a_task_that_failed_has_its_error_raised() -> None:
    async def broken() -> None:
        raise RuntimeError("the loop died")

    task = asyncio.create_task(broken())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="the loop died"):
        await cancel_and_wait(task)
