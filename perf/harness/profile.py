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


# "emit (kaireon_server/provenance/emit.py:101)": a frame's line number, dropped so
# that a function's samples add up across its lines.
_LINE_NO = re.compile(r":\d+\)$")


def _category(frames: list[str], categories: list[tuple[str, tuple[str, ...]]]) -> str:
    """The first category with a frame containing one of its markers (anywhere in the
    stack); then idle (epoll on top), native code under an asyncio callback (no
    Python frame: grpc.aio's Cython), threads, other."""
    for name, markers in categories:
        if any(m in f for f in frames for m in markers):
            return name
    top = frames[-1]
    if top.startswith(("EpollSelector.select", "select ")):
        return "idle: waiting in epoll"
    if top.startswith("Handle._run"):
        return "native code under an asyncio callback (grpc.aio)"
    return "other threads (grpc poller)" if "threading.py" in top else "other"


def report(path: Path, categories: list[tuple[str, tuple[str, ...]]], head: str = "") -> str | None:
    """`head`, the samples by category, then the frames with the most samples by self
    time (on top of the stack) and by inclusive time (anywhere in it); shares of the
    samples py-spy recorded (it skips idle threads). None if it recorded nothing."""
    by_category: Counter[str] = Counter()
    by_self: Counter[str] = Counter()
    by_frame: Counter[str] = Counter()
    # Collapsed stacks, without py-spy's "process <pid>:…" roots (--subprocesses puts them first).
    for line in path.read_text(errors="replace").splitlines() if path.exists() else []:
        stack, _, count = line.rpartition(" ")
        raw = [f for f in stack.split(";") if f and not f.startswith("process ")]
        frames = [_LINE_NO.sub(")", f.strip()) for f in raw]
        if not (frames and count.isdigit()):
            continue
        by_category[_category(frames, categories)] += int(count)
        by_self[frames[-1]] += int(count)
        by_frame.update(dict.fromkeys(frames, int(count)))  # once however often it recurs
    total = sum(by_self.values())
    if total == 0:
        return None
    lines = [head] if head else []
    lines.append(f"py-spy by category: {total} samples ({path.name})")
    lines += [f"    {n * 100 / total:5.1f}%  {name}" for name, n in by_category.most_common()]
    lines.append(f"py-spy: {total} samples ({path.name})")
    for title, counts in (("self time", by_self), ("inclusive time", by_frame)):
        lines.append(f"  {title}:")
        lines += [f"    {n * 100 / total:5.1f}%  {frame}" for frame, n in counts.most_common(12)]
    return "\n".join(lines)
