"""Resource figures sampled over a long run: per process tree (procmon's groups)
resident memory, open file descriptors and process count, plus gauges read by
the caller (PostgreSQL connections). A soak reads growth from them: the mean
of a window at the start of a phase against the mean of a window at its end.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from statistics import fmean

import psutil

from harness.procmon import Roots, tree

Gauges = Callable[[], Awaitable[dict[str, float]]]


@dataclass(frozen=True)
class TreeSample:
    rss: int
    fds: int
    processes: int


def sample_tree(roots: Iterable[int]) -> TreeSample:
    rss = fds = count = 0
    for proc in tree(roots):
        with contextlib.suppress(psutil.Error):
            with proc.oneshot():
                rss += proc.memory_info().rss
                fds += proc.num_fds()
            count += 1
    return TreeSample(rss, fds, count)


@dataclass
class Sample:
    t: float  # seconds since the timeline started
    values: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Growth:
    """One series over one phase: window means at its start and end, and its peak."""

    first: float | None
    last: float | None
    peak: float | None
    window: float

    @property
    def growth(self) -> float | None:
        if self.first is None or self.last is None:
            return None
        return self.last - self.first

    @property
    def percent(self) -> float | None:
        if self.growth is None or not self.first:
            return None
        return 100.0 * self.growth / self.first


class Timeline:
    """Samples every `interval` seconds in an asyncio task until stopped."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.samples: list[Sample] = []
        self._groups: dict[str, Roots] = {}
        self._gauges: list[Gauges] = []
        self._task: asyncio.Task[None] | None = None
        self._started = 0.0

    def add_group(self, name: str, roots: Roots) -> None:
        self._groups[name] = roots

    def add_gauges(self, gauges: Gauges) -> None:
        self._gauges.append(gauges)

    def now(self) -> float:
        return time.monotonic() - self._started

    async def sample(self) -> Sample:
        sample = Sample(self.now())
        # A copy: groups may be added from another thread (k6 once it runs).
        for name, roots in list(self._groups.items()):
            tree_sample = await asyncio.to_thread(sample_tree, list(roots()))
            sample.values[f"{name}.rss"] = tree_sample.rss
            sample.values[f"{name}.fds"] = tree_sample.fds
            sample.values[f"{name}.processes"] = tree_sample.processes
        for gauges in self._gauges:
            with contextlib.suppress(Exception):
                sample.values.update(await gauges())
        self.samples.append(sample)
        return sample

    async def _run(self, on_sample: Callable[[Sample], None] | None) -> None:
        while True:
            sample = await self.sample()
            if on_sample is not None:
                on_sample(sample)
            await asyncio.sleep(self.interval)

    def start(self, on_sample: Callable[[Sample], None] | None = None) -> None:
        self._started = time.monotonic()
        self._task = asyncio.create_task(self._run(on_sample))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def shift(self, origin: float) -> None:
        """Makes `origin` (seconds since the start) time 0, e.g. the load's real start."""
        for s in self.samples:
            s.t -= origin
        self._started += origin

    def series(self, key: str, start: float, end: float) -> list[float]:
        return [s.values[key] for s in self.samples if start <= s.t < end and key in s.values]

    def growth(self, key: str, start: float, end: float, window: float) -> Growth:
        """Mean of [start, start+window) against mean of [end-window, end); peak of [start, end)."""
        window = min(window, max(self.interval, (end - start) / 3))
        first = self.series(key, start, start + window)
        last = self.series(key, end - window, end)
        every = self.series(key, start, end)
        return Growth(
            fmean(first) if first else None,
            fmean(last) if last else None,
            max(every) if every else None,
            window,
        )

    def peak(self, key: str, start: float, end: float) -> float | None:
        values = self.series(key, start, end)
        return max(values) if values else None

    def keys(self) -> list[str]:
        seen: dict[str, None] = {}
        for s in self.samples:
            seen.update(dict.fromkeys(s.values))
        return list(seen)
