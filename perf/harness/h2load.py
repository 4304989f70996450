"""h2load (Debian package nghttp2-client) as a cheap gRPC / HTTP load generator.

A unary gRPC call is an HTTP/2 POST to /<service>/<method> whose body is the
message with a 5-byte prefix (compressed flag 0, big-endian length), sent with
`content-type: application/grpc` and `te: trailers`. h2load can send exactly
that, closed-loop (c connections x m streams, as fast as the server answers),
in one C thread: a fraction of k6's CPU per request, so the server keeps the
machine. Its limit: it judges HTTP status only, and gRPC reports errors in
trailers under HTTP 200, so the harness verifies the calls separately (one
checked call before, and where the service leaves a trace, counting it).

Latency percentiles come from h2load's per-request log (--log-file).
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

from harness.stats import LatencyStats, percentiles


def available() -> str | None:
    return shutil.which("h2load")


def grpc_frame(message: bytes) -> bytes:
    """The length-prefixed gRPC message: flag 0 (uncompressed), 4-byte length, bytes."""
    return struct.pack(">BI", 0, len(message)) + message


@dataclass
class H2loadResult:
    requests: int
    failed: int
    rps: float
    latency: LatencyStats
    command: list[str]


_FINISHED = re.compile(r"finished in [\d.]+m?s, ([\d.]+) req/s")
_REQUESTS = re.compile(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded")
_STATUS = re.compile(r"status codes: \d+ 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx")


def run(
    url: str,
    *,
    duration: float,
    clients: int,
    streams: int,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    http1: bool = False,
    workdir: Path,
    name: str,
) -> H2loadResult:
    exe = available()
    if exe is None:
        raise RuntimeError("h2load is not installed (Debian package nghttp2-client)")
    log = workdir / f"{name}.h2load.log"
    cmd = [exe, "-t", "1", "-c", str(clients), "-m", str(1 if http1 else streams)]
    # Durations in milliseconds: h2load reads "1.5" as an error.
    cmd += ["-D", f"{round(duration * 1000)}ms", f"--log-file={log}"]
    if http1:
        cmd.append("--h1")
    if body is not None:
        data = workdir / f"{name}.body"
        data.write_bytes(body)
        cmd += ["-d", str(data)]
    for key, value in (headers or {}).items():
        cmd += ["-H", f"{key}: {value}"]
    cmd.append(url)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60, check=False)
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise RuntimeError(f"h2load exited {proc.returncode}: {out[-800:]}")
    finished = _FINISHED.search(out)
    reqs = _REQUESTS.search(out)
    status = _STATUS.search(out)
    if not (finished and reqs):
        raise RuntimeError(f"cannot read h2load output: {out[-800:]}")
    done, succeeded = int(reqs[1]), int(reqs[2])
    non_2xx = sum(map(int, status.groups())) if status else 0
    # The per-request log: start (µs since epoch), HTTP status, elapsed µs -> ms.
    fields = [line.split("\t") for line in log.read_text().splitlines()] if log.exists() else []
    elapsed = [int(f[2]) / 1000.0 for f in fields if len(f) >= 3 and f[2].strip().isdigit()]
    log.unlink(missing_ok=True)
    return H2loadResult(
        requests=done,
        failed=(done - succeeded) + non_2xx,
        rps=float(finished.group(1)),
        latency=percentiles(elapsed),
        command=cmd,
    )
