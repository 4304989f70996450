"""KeyedBatcher, the grouping under the audit writer and provenance's grouped
reads: batches per key, a failed batch fails its callers only, a caller that
gives up cancels nobody else's call, shutdown answers UNAVAILABLE."""

from __future__ import annotations

import asyncio

import pytest

from kaireon_server.platform.batching import KeyedBatcher
from kaireon_server.platform.errors import Unavailable


class Recorder:
    """A batch function that records each batch and can be held or made to fail."""

    def __init__(self) -> None:
        self.batches: list[tuple[str, list[int]]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail_on: int | None = None

    async def __call__(self, key: str, items: list[int]) -> list[str]:
        self.batches.append((key, items))
        await self.gate.wait()
        if self.fail_on is not None and self.fail_on in items:
            raise ValueError(f"bad item {self.fail_on}")
        return [f"{key}:{item}" for item in items]


async def test_calls_queued_behind_a_batch_go_together_and_keys_never_mix() -> None:
    run = Recorder()
    batcher: KeyedBatcher[str, int, str] = KeyedBatcher(run, max_batch=3)
    results = await asyncio.gather(
        *(batcher.submit("a", n) for n in range(5)), batcher.submit("b", 9)
    )
    assert results == ["a:0", "a:1", "a:2", "a:3", "a:4", "b:9"]
    # Queued before the key's drainer ran: batches of at most 3, in order.
    assert [b for b in run.batches if b[0] == "a"] == [("a", [0, 1, 2]), ("a", [3, 4])]
    assert ("b", [9]) in run.batches
    # An idle key's call goes alone, at once.
    assert await batcher.submit("a", 7) == "a:7"
    assert run.batches[-1] == ("a", [7])


async def test_submit_many_keeps_order_and_nothing_is_nothing() -> None:
    run = Recorder()
    batcher: KeyedBatcher[str, int, str] = KeyedBatcher(run, max_batch=2)
    assert await batcher.submit_many("a", []) == []
    assert run.batches == []  # no drainer for an empty call
    assert await batcher.submit_many("a", [1, 2, 3]) == ["a:1", "a:2", "a:3"]
    assert [items for _, items in run.batches] == [[1, 2], [3]]


async def test_a_failed_batch_fails_its_callers_and_the_next_batch_runs() -> None:
    run = Recorder()
    run.gate.clear()
    run.fail_on = 2
    batcher: KeyedBatcher[str, int, str] = KeyedBatcher(run, max_batch=10)
    first = asyncio.ensure_future(batcher.submit("a", 1))
    await asyncio.sleep(0)  # batch [1] is in flight, held
    queued = [asyncio.ensure_future(batcher.submit("a", n)) for n in (2, 3)]
    run.gate.set()
    assert await first == "a:1"
    answers = await asyncio.gather(*queued, return_exceptions=True)
    assert all(isinstance(a, ValueError) for a in answers)  # the batch [2, 3] failed together
    assert await batcher.submit("a", 4) == "a:4"  # and the key is still served


async def test_a_caller_that_gives_up_cancels_nobody_else() -> None:
    run = Recorder()
    run.gate.clear()
    batcher: KeyedBatcher[str, int, str] = KeyedBatcher(run, max_batch=10)
    quitter = asyncio.ensure_future(batcher.submit("a", 1))
    stayer = asyncio.ensure_future(batcher.submit("a", 2))
    await asyncio.sleep(0)
    quitter.cancel()
    run.gate.set()
    assert await stayer == "a:2"
    with pytest.raises(asyncio.CancelledError):
        await quitter
    assert run.batches == [("a", [1, 2])]  # the batch ran whole


async def test_close_answers_waiting_callers_unavailable() -> None:
    run = Recorder()
    run.gate.clear()
    batcher: KeyedBatcher[str, int, str] = KeyedBatcher(run, max_batch=1)
    waiting = [asyncio.ensure_future(batcher.submit("a", n)) for n in range(3)]
    await asyncio.sleep(0)
    await batcher.close()
    answers = await asyncio.gather(*waiting, return_exceptions=True)
    assert all(isinstance(a, Unavailable) and a.reason == "SHUTTING_DOWN" for a in answers)


async def test_a_busy_key_lingers_so_late_calls_join_the_next_batch() -> None:
    """Calls that trickle in while a batch runs: without linger the next batch
    takes what has arrived (one call); with it, the ones arriving within the
    linger join. An idle key's lone call never waits."""

    async def trickle(batcher: KeyedBatcher[str, int, str], run: Recorder) -> list[list[int]]:
        run.batches.clear()
        run.gate.clear()
        first = [asyncio.create_task(batcher.submit("a", n)) for n in (0, 1)]
        await asyncio.sleep(0.01)  # batch [0, 1] in flight: the key is busy
        late = [asyncio.create_task(batcher.submit("a", 2))]
        run.gate.set()
        await asyncio.sleep(0.005)  # the next batch is chosen during this
        late += [asyncio.create_task(batcher.submit("a", n)) for n in (3, 4)]
        await asyncio.gather(*first, *late)
        return [items for _, items in run.batches]

    run = Recorder()
    eager: KeyedBatcher[str, int, str] = KeyedBatcher(run, max_batch=10)
    assert await trickle(eager, run) == [[0, 1], [2], [3, 4]]
    patient: KeyedBatcher[str, int, str] = KeyedBatcher(run, max_batch=10, linger=0.5)
    assert await trickle(patient, run) == [[0, 1], [2, 3, 4]]

    run.batches.clear()
    loop = asyncio.get_running_loop()
    began = loop.time()
    assert await patient.submit("b", 7) == "b:7"  # idle: goes at once
    assert loop.time() - began < 0.4  # far below the linger
    assert run.batches == [("b", [7])]
