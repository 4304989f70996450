"""Resource figures sampled over a long run: per process tree (procmon's groups)
resident memory, open file descriptors and process count, plus gauges read by
the caller (PostgreSQL connections). A soak reads growth from them: the mean
of a window at the start of a phase against the mean of a window at its end.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass, field
from statistics import fmean

import psutil

from harness.procmon import Roots, tree

Gauges = Callable[[], Awaitable[dict[str, float]]]


@dataclass(frozen=True)
class TreeSample:
    rss: int
    # Proportional set size: shared pages divided among the processes sharing them
    # (PostgreSQL's shared buffers count once, not once per backend); 0 if unknown.
    pss: int
    fds: int
    processes: int
    # Established TCP connections to `ports` (the server's listening ports): the
    # clients' sockets among the descriptors.
    inbound: int
    # pid -> (user + system CPU seconds so far, create time)
    cpu: dict[int, tuple[float, float]]


def _pss(pid: int) -> int:
    # smaps_rollup (Linux >= 4.14) is one short read; psutil's full smaps walk is
    # ~50 ms per process, too slow to sample every few seconds.
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def sample_tree(roots: Iterable[int], ports: Collection[int] = ()) -> TreeSample:
    rss = pss = fds = count = inbound = 0
    cpu: dict[int, tuple[float, float]] = {}
    for proc in tree(roots):
        with contextlib.suppress(psutil.Error):
            with proc.oneshot():
                rss += proc.memory_info().rss
                fds += proc.num_fds()
                times = proc.cpu_times()
                cpu[proc.pid] = (times.user + times.system, proc.create_time())
            pss += _pss(proc.pid)
            if ports:
                inbound += sum(
                    1
                    for c in proc.net_connections(kind="tcp")
                    if c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port in ports
                )
            count += 1
    return TreeSample(rss, pss, fds, count, inbound, cpu)


def cpu_used(
    before: dict[int, tuple[float, float]], after: dict[int, tuple[float, float]], since: float
) -> float:
    """CPU seconds the tree's processes used between two samples: a process seen in
    both counts its difference, one born after `since` (wall clock) all of its time.
    (A process that ended in between is not counted: PostgreSQL backends come and
    go, so its figure is a lower bound.)"""
    used = 0.0
    for pid, (seconds, created) in after.items():
        if pid in before and before[pid][1] == created:
            used += max(0.0, seconds - before[pid][0])
        elif created >= since:
            used += seconds
    return used


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
    mean: float | None = None

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
        self._groups: dict[str, tuple[Roots, tuple[int, ...]]] = {}
        self._gauges: list[Gauges] = []
        self._task: asyncio.Task[None] | None = None
        self._started = 0.0
        # group -> (wall clock of the previous sample, its per-process CPU)
        self._cpu: dict[str, tuple[float, dict[int, tuple[float, float]]]] = {}

    def add_group(self, name: str, roots: Roots, ports: Collection[int] = ()) -> None:
        """A process tree to sample; `ports`: count the connections clients hold to them."""
        self._groups[name] = (roots, tuple(ports))

    def add_gauges(self, gauges: Gauges) -> None:
        self._gauges.append(gauges)

    def now(self) -> float:
        return time.monotonic() - self._started

    async def sample(self) -> Sample:
        sample = Sample(self.now())
        # A copy: groups may be added from another thread (k6 once it runs).
        for name, (roots, ports) in list(self._groups.items()):
            wall = time.time()
            tree_sample = await asyncio.to_thread(sample_tree, list(roots()), ports)
            previous = self._cpu.get(name)
            if previous is not None and wall > previous[0]:
                used = cpu_used(previous[1], tree_sample.cpu, previous[0])
                # % of one core since the previous sample (200% = both cores of 2).
                sample.values[f"{name}.cpu"] = 100.0 * used / (wall - previous[0])
            self._cpu[name] = (wall, tree_sample.cpu)
            sample.values[f"{name}.rss"] = tree_sample.rss
            if tree_sample.pss:
                sample.values[f"{name}.pss"] = tree_sample.pss
            sample.values[f"{name}.fds"] = tree_sample.fds
            sample.values[f"{name}.processes"] = tree_sample.processes
            if ports:
                sample.values[f"{name}.inbound"] = tree_sample.inbound
                # What is left is the server's own: files, pipes, database sockets.
                sample.values[f"{name}.own_fds"] = tree_sample.fds - tree_sample.inbound
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
            fmean(every) if every else None,
        )

    def peak(self, key: str, start: float, end: float) -> float | None:
        values = self.series(key, start, end)
        return max(values) if values else None

    def keys(self) -> list[str]:
        seen: dict[str, None] = {}
        for s in self.samples:
            seen.update(dict.fromkeys(s.values))
        return list(seen)
