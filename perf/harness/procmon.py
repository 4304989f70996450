"""CPU and memory of process trees (psutil), sampled while something runs: a timeline
over a whole soak, or over a perf/run whose rows each read a window of it.

A group is a set of root pids plus all their descendants (the supervisor and
its KAIREON_WORKERS children, PostgreSQL's postmaster and its backends). CPU
is the sum of user+system time the group's processes spent during a window,
as a percentage of one core (200% = both cores of this machine); peak RSS is
the largest sum of resident memory of the group seen by the sampler in the
window. Resident memory of PostgreSQL backends counts shared buffers once
per backend that touched them, so the postgres figure overstates; the
server's python processes share little, so theirs is close to real (the
timeline also has PSS, which splits shared pages).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass, field
from statistics import fmean

import psutil

Roots = Callable[[], Iterable[int]]
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
    with contextlib.suppress(OSError), open(f"/proc/{pid}/smaps_rollup") as fh:
        for line in fh:
            if line.startswith("Pss:"):  # "Pss:   1234 kB"
                return int(line.split()[1]) * 1024
    return 0


def sample_tree(
    roots: Iterable[int], ports: Collection[int] = (), *, full: bool = True
) -> TreeSample:
    """RSS and CPU of the tree; `full`: also PSS, descriptors and the clients'
    connections (too slow for the windows' 0.2 s samples)."""
    procs: dict[int, psutil.Process] = {}  # each process once, skipping any that exited
    for pid in roots:
        with contextlib.suppress(psutil.Error):
            root = psutil.Process(pid)
            procs |= {p.pid: p for p in [root, *root.children(recursive=True)]}
    rss = pss = fds = count = inbound = 0
    cpu: dict[int, tuple[float, float]] = {}
    for proc in procs.values():
        with contextlib.suppress(psutil.Error), proc.oneshot():
            rss += proc.memory_info().rss
            times = proc.cpu_times()
            cpu[proc.pid] = (times.user + times.system, proc.create_time())
            fds += proc.num_fds() if full else 0
            count += 1
            if not full:
                continue
            pss += _pss(proc.pid)
            if ports:
                inbound += sum(
                    1
                    for c in proc.net_connections(kind="tcp")
                    if c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port in ports
                )
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


# -- the timeline: sampled while perf/run or perf/soak runs ---------------------------------


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


class Timeline:
    """Resource figures sampled every `interval` seconds in an asyncio task until
    stopped: per process tree resident memory, CPU, open file descriptors and process
    count, plus gauges read by the caller (PostgreSQL connections). `full=False`: RSS
    and CPU only (fast enough for 0.2 s)."""

    def __init__(self, interval: float, *, full: bool = True) -> None:
        self.interval = interval
        self.full = full
        self.samples: list[Sample] = []
        # One sample at a time: each group's CPU is counted from the sample before.
        self._lock = asyncio.Lock()
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
        async with self._lock:
            sample = Sample(self.now())
            values = sample.values
            # A copy: groups may be added from another thread (k6 once it runs).
            for name, (roots, ports) in list(self._groups.items()):
                wall = time.time()
                s = await asyncio.to_thread(sample_tree, list(roots()), ports, full=self.full)
                if (previous := self._cpu.get(name)) is not None and wall > previous[0]:
                    used = cpu_used(previous[1], s.cpu, previous[0])
                    values[f"{name}.cpu_s"] = used
                    # % of one core since the previous sample (200% = both cores of 2).
                    values[f"{name}.cpu"] = 100.0 * used / (wall - previous[0])
                self._cpu[name] = (wall, s.cpu)
                values[f"{name}.rss"], values[f"{name}.processes"] = s.rss, s.processes
                if self.full:
                    if s.pss:
                        values[f"{name}.pss"] = s.pss
                    values[f"{name}.fds"] = s.fds
                    if ports:
                        values[f"{name}.inbound"] = s.inbound
                        # What is left is the server's own: files, pipes, database sockets.
                        values[f"{name}.own_fds"] = s.fds - s.inbound
            for gauges in self._gauges:
                with contextlib.suppress(Exception):
                    values.update(await gauges())
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
        return max(self.series(key, start, end), default=None)
