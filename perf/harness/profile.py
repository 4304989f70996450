"""py-spy (PyPI, dev group) over the server's processes while a scenario runs.

`py-spy record --format raw` writes collapsed stacks ("f1;f2;…;fn count");
the summary names the frames the server spends its samples in, by self time
(the frame on top of the stack) and by inclusive time (anywhere in it); the
breakdown adds them up by part of the server.
"""

from __future__ import annotations

import re
import signal
import subprocess
from collections import Counter
from pathlib import Path

from harness.stack import dev_tool


def start(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes] | None:
    exe = dev_tool("py-spy")
    if exe is None:
        return None
    cmd = [exe, "record", "--pid", str(pid), "--subprocesses", "--rate", "200", "--nonblocking"]
    cmd += ["--duration", str(max(1, round(seconds))), "--format", "raw", "--output", str(out)]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop(spy: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """End a recording early: on SIGINT py-spy writes what it sampled, then exits."""
    if spy.poll() is None:
        spy.send_signal(signal.SIGINT)
    try:
        spy.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        spy.kill()
        spy.wait(timeout=5)


_LINE_NO = re.compile(r":\d+\)$")


def _frame(raw: str) -> str:
    # "emit (kaireon_server/provenance/emit.py:101)" -> without the line, so a
    # function's samples add up across its lines.
    return _LINE_NO.sub(")", raw.strip())


def _stacks(path: Path) -> list[tuple[list[str], int]]:
    """(frames, samples) of each collapsed stack, without py-spy's "process <pid>:…"
    roots (--subprocesses puts them first)."""
    out = []
    for line in path.read_text(errors="replace").splitlines() if path.exists() else []:
        stack, _, count = line.rpartition(" ")
        frames = [f for f in stack.split(";") if f and not f.startswith("process ")]
        if frames and count.isdigit():
            out.append((frames, int(count)))
    return out


def summarize(path: Path, limit: int = 12) -> str | None:
    """The frames with the most samples, by self and by inclusive time."""
    self_counts: Counter[str] = Counter()
    incl_counts: Counter[str] = Counter()
    total = 0
    for raw, count in _stacks(path):
        frames = [_frame(f) for f in raw]
        total += count
        self_counts[frames[-1]] += count
        for frame in set(frames):
            incl_counts[frame] += count
    if total == 0:
        return None
    lines = [f"py-spy: {total} samples ({path.name})"]
    for title, counts in (("self time", self_counts), ("inclusive time", incl_counts)):
        lines.append(f"  {title}:")
        lines += [f"    {n * 100 / total:5.1f}%  {frame}" for frame, n in counts.most_common(limit)]
    return "\n".join(lines)


def breakdown(path: Path, categories: list[tuple[str, tuple[str, ...]]]) -> str | None:
    """Samples by category: the first category with a frame containing one of its
    markers (anywhere in the stack) takes the sample; then idle (epoll on top),
    native code under an asyncio callback (no Python frame: grpc.aio's Cython),
    threads, other. Shares of the samples py-spy recorded (it skips idle threads)."""
    counts: Counter[str] = Counter()
    for frames, count in _stacks(path):
        name = next(
            (c for c, markers in categories if any(m in f for f in frames for m in markers)),
            None,
        )
        if name is None:
            top = _frame(frames[-1])
            if top.startswith(("EpollSelector.select", "select ")):
                name = "idle: waiting in epoll"
            elif top.startswith("Handle._run"):
                name = "native code under an asyncio callback (grpc.aio)"
            elif "threading.py" in top:
                name = "other threads (grpc poller)"
            else:
                name = "other"
        counts[name] += count
    total = sum(counts.values())
    if not total:
        return None
    lines = [f"py-spy by category: {total} samples ({path.name})"]
    lines += [f"    {n * 100 / total:5.1f}%  {name}" for name, n in counts.most_common()]
    return "\n".join(lines)


def report(path: Path, categories: list[tuple[str, tuple[str, ...]]], head: str = "") -> str | None:
    """`head`, the samples by category, then the top frames; None if py-spy recorded nothing."""
    summary = summarize(path)
    if summary is None:
        return None
    return "\n".join(t for t in (head, breakdown(path, categories), summary) if t)
