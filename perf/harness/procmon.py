"""CPU and memory of process trees (psutil), sampled while a scenario runs.

A group is a set of root pids plus all their descendants (the supervisor and
its KAIREON_WORKERS children, PostgreSQL's postmaster and its backends). CPU
is the sum of user+system time the group's processes spent during a window,
as a percentage of one core (200% = both cores of this machine); peak RSS is
the largest sum of resident memory of the group seen by the sampler in the
window. Resident memory of PostgreSQL backends counts shared buffers once
per backend that touched them, so the postgres figure overstates; the
server's python processes share little, so theirs is close to real.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import psutil

Roots = Callable[[], Iterable[int]]


@dataclass
class GroupUsage:
    cpu_seconds: float
    wall_seconds: float
    peak_rss: int

    @property
    def cpu_percent(self) -> float:
        return 100.0 * self.cpu_seconds / self.wall_seconds if self.wall_seconds > 0 else 0.0


@dataclass
class _Window:
    started: float
    # pid -> cpu seconds at the window start (or 0 for processes born in it)
    baseline: dict[str, dict[int, float]] = field(default_factory=dict)
    last: dict[str, dict[int, float]] = field(default_factory=dict)
    peak_rss: dict[str, int] = field(default_factory=dict)


def tree(roots: Iterable[int]) -> list[psutil.Process]:
    """The processes of the trees under `roots` (each once), skipping any that exited."""
    procs: dict[int, psutil.Process] = {}
    for pid in roots:
        try:
            root = psutil.Process(pid)
            procs[root.pid] = root
            for child in root.children(recursive=True):
                procs[child.pid] = child
        except psutil.Error:
            continue
    return list(procs.values())


class ProcessMonitor:
    """Samples every `interval` seconds in a thread; windows may overlap."""

    def __init__(self, interval: float = 0.2) -> None:
        self._groups: dict[str, Roots] = {}
        self._interval = interval
        self._windows: list[_Window] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add_group(self, name: str, roots: Roots) -> None:
        with self._lock:
            self._groups[name] = roots

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="procmon", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _sample(self) -> dict[str, tuple[dict[int, tuple[float, float]], int]]:
        """group -> ({pid: (cpu seconds, create time)}, rss sum)."""
        with self._lock:
            groups = dict(self._groups)
        out: dict[str, tuple[dict[int, tuple[float, float]], int]] = {}
        for name, roots in groups.items():
            cpu: dict[int, tuple[float, float]] = {}
            rss = 0
            try:
                root_pids = list(roots())
            except Exception:
                root_pids = []
            for proc in tree(root_pids):
                with contextlib.suppress(psutil.Error), proc.oneshot():
                    times = proc.cpu_times()
                    cpu[proc.pid] = (times.user + times.system, proc.create_time())
                    rss += proc.memory_info().rss
            out[name] = (cpu, rss)
        return out

    def _apply(self, sample: dict[str, tuple[dict[int, tuple[float, float]], int]]) -> None:
        with self._lock:
            for window in self._windows:
                for name, (cpu, rss) in sample.items():
                    base = window.baseline.setdefault(name, {})
                    last = window.last.setdefault(name, {})
                    for pid, (seconds, created) in cpu.items():
                        if pid not in base:
                            # Born during the window: all its CPU belongs to it.
                            base[pid] = 0.0 if created >= window.started else seconds
                        last[pid] = seconds
                    window.peak_rss[name] = max(window.peak_rss.get(name, 0), rss)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._apply(self._sample())
            self._stop.wait(self._interval)

    def open_window(self) -> _Window:
        window = _Window(started=time.time())
        sample = self._sample()
        with self._lock:
            for name, (cpu, rss) in sample.items():
                window.baseline[name] = {pid: s for pid, (s, _) in cpu.items()}
                window.last[name] = dict(window.baseline[name])
                window.peak_rss[name] = rss
            self._windows.append(window)
        return window

    def close_window(self, window: _Window) -> dict[str, GroupUsage]:
        self._apply(self._sample())
        wall = time.time() - window.started
        with self._lock:
            self._windows.remove(window)
            usage = {}
            for name, last in window.last.items():
                base = window.baseline.get(name, {})
                used = sum(max(0.0, s - base.get(pid, s)) for pid, s in last.items())
                usage[name] = GroupUsage(used, wall, window.peak_rss.get(name, 0))
        return usage
