"""Where a verification hashes: a worker thread for a short range, a child process for a long one.

A worker thread holds the GIL that the event loop needs at every await of every
other call the process serves: during a full re-verification of a 1M-row log the
p50 and p99 of other calls on the same process rose about tenfold
(perf/baselines/2026-12-04-scale-1m-2core.md). A long range therefore hashes
in one spawned child (a fork of a process running gRPC is unsafe) at a lower CPU
priority; the child takes seconds to start, so a short range, the incremental
case, stays in a thread. Either way the caller gets the
state back: `state = await hasher.apply(fn, state, rows, ...)`.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any, TypeVar

import asyncpg

# More rows than this hash in a child process: its start (1-5 s on a busy 2-core
# machine) is then small beside the hashing (~10-20 s).
OFFLOAD_ROWS = 20_000
# The child's nice value: on a busy machine the scheduler serves the calls first.
NICENESS = 10

S = TypeVar("S")


def _apply(fn: Callable[..., object], state: S, *args: Any) -> S:
    """In the child: run `fn(state, *args)` and send the updated state back."""
    fn(state, *args)
    return state


def _background() -> None:
    """In the child: lower its CPU priority; it is background work, the calls are not."""
    os.nice(NICENESS)


def _picklable(value: Any) -> Any:
    # asyncpg records do not pickle; their items do.
    if isinstance(value, list) and value and isinstance(value[0], asyncpg.Record):
        return [dict(rec.items()) for rec in value]
    return value


class Hasher:
    """One verification's hashing; `close` it (the child exits with it)."""

    def __init__(self, rows: int) -> None:
        self._pool = (
            ProcessPoolExecutor(
                1, mp_context=multiprocessing.get_context("spawn"), initializer=_background
            )
            if rows > OFFLOAD_ROWS
            else None
        )

    @property
    def offloaded(self) -> bool:
        return self._pool is not None

    async def apply(self, fn: Callable[..., object], state: S, *args: Any) -> S:
        if self._pool is None:
            await asyncio.to_thread(fn, state, *args)
            return state
        loop = asyncio.get_running_loop()
        plain = [_picklable(a) for a in args]
        return await loop.run_in_executor(self._pool, _apply, fn, state, *plain)

    def close(self) -> None:
        if self._pool is not None:
            # Not waiting: a cancelled stream must not block the event loop.
            self._pool.shutdown(wait=False, cancel_futures=True)
