"""Calls grouped by key: the ones that arrive while a batch of their key is in
flight go together in the next batch (group commit, DataLoader-style reads).

An idle key's call goes alone, at once; under load, batches form by
themselves, up to `max_batch`. With `linger`, a drainer whose last batch held
more than one call (the key is busy) waits that long before taking the next,
so more calls join it: fewer, larger statements for a little latency, paid
only under load. One drainer task per key runs the batches one
after another, so a key never has two batches in flight (the audit chain's
appends are serialised anyway; a tenant's reads need not be parallel to be
fast: one statement answers them all).

Failure semantics are those of separate calls: a caller gets its result only
after its batch ran; when the batch fails, every caller of it gets the error.
A caller that gives up (cancelled) while queued does not cancel the batch of
the others, and its item may still be processed.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Any, Generic, TypeVar

from kaireon_server.platform.errors import Unavailable
from kaireon_server.platform.tasks import cancel_and_wait

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")
R = TypeVar("R")


class KeyedBatcher(Generic[K, T, R]):
    def __init__(
        self,
        run: Callable[[K, list[T]], Awaitable[Sequence[R]]],
        *,
        max_batch: int,
        linger: float = 0.0,
    ) -> None:
        """`run(key, items)` answers a batch: one result per item, in order."""
        self._run = run
        self._max_batch = max_batch
        self._linger = linger
        self._queues: defaultdict[K, deque[tuple[T, asyncio.Future[R]]]] = defaultdict(deque)
        self._drainers: dict[K, asyncio.Task[None]] = {}

    async def submit(self, key: K, item: T) -> R:
        """Queue `item` and wait for its result."""
        [future] = self._enqueue(key, [item])
        # Shielded: a caller that gives up must not cancel the batch of the others.
        return await asyncio.shield(future)

    async def submit_many(self, key: K, items: Sequence[T]) -> list[R]:
        """Queue `items` (in order, possibly split across batches) and wait for
        their results: one wait for them all, not a task per item."""
        if not items:
            return []
        futures = self._enqueue(key, items)
        return list(await asyncio.shield(asyncio.gather(*futures)))

    def _enqueue(self, key: K, items: Sequence[T]) -> list[asyncio.Future[R]]:
        loop = asyncio.get_running_loop()
        queue = self._queues[key]
        futures: list[asyncio.Future[R]] = []
        for item in items:
            future: asyncio.Future[R] = loop.create_future()
            # Retrieved here, so a caller that gave up leaves no "never retrieved" warning.
            future.add_done_callback(_retrieve)
            queue.append((item, future))
            futures.append(future)
        if key not in self._drainers:
            self._drainers[key] = asyncio.create_task(self._drain(key))
        return futures

    async def _drain(self, key: K) -> None:
        queue = self._queues[key]
        busy = False
        try:
            while queue:
                if busy and self._linger and len(queue) < self._max_batch:
                    await asyncio.sleep(self._linger)
                batch = [queue.popleft() for _ in range(min(len(queue), self._max_batch))]
                busy = len(batch) > 1
                try:
                    results = await self._run(key, [item for item, _ in batch])
                except BaseException as exc:
                    stopped = isinstance(exc, asyncio.CancelledError)
                    for _, future in batch:
                        if not future.done():
                            # Callers are not cancelled themselves: tell them why.
                            future.set_exception(_stopped() if stopped else exc)
                    if stopped:
                        raise
                    continue
                for (_, future), result in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(result)
        finally:
            self._drainers.pop(key, None)
            if not queue:
                self._queues.pop(key, None)
            else:
                # Items queued while this drainer was being cancelled: fail them
                # rather than leave their callers waiting forever.
                self._fail_all(queue)

    def _fail_all(self, queue: deque[tuple[T, asyncio.Future[R]]]) -> None:
        while queue:
            _, future = queue.popleft()
            if not future.done():
                future.set_exception(_stopped())

    async def close(self) -> None:
        """Stop the drainers (at shutdown, after the server stopped taking calls)."""
        await cancel_and_wait(*self._drainers.values())
        # A drainer cancelled before it ever ran left its queue untouched.
        for queue in self._queues.values():
            self._fail_all(queue)
        self._queues.clear()
        self._drainers.clear()


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def _stopped() -> Exception:
    """The error of callers whose batch was stopped at shutdown (retryable)."""
    return Unavailable("the server is shutting down; retry", reason="SHUTTING_DOWN")
