"""k6 over a plan: the constant-arrival-rate scenarios perf/k6/soak.js runs (a row
of perf/run, the soak's phases, the lab's mix), running it and reading its JSON
summary (handleSummary, k6/lib/summary.js).
"""

from __future__ import annotations

import json
import math
import os
import shlex
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.stack import dev_tool

K6_DIR = Path(__file__).resolve().parent.parent / "k6"
# How a call ended (k6/lib/ops.js); the scripts tag kaireon_requests and kaireon_e2e with it.
OUTCOMES = ("ok", "shed", "unavailable", "timeout", "network", "error")


@dataclass(frozen=True, kw_only=True)
class Scenario:
    """One k6 scenario of a plan (the JSON soak.js reads from SOAK_PLAN): an operation
    of k6/lib/ops.js over one protocol, at `rate` iterations per minute (a share of a
    small rate keeps its precision: 2.5/s = 150/min) from `startTime` for `duration`;
    an erasure scenario erases ecust_<eraseFirst>… up to eraseCount customers."""

    name: str
    op: str
    protocol: str
    rate: int
    duration: str
    preAllocatedVUs: int
    maxVUs: int
    gracefulStop: str
    phase: str = ""
    timeUnit: str = "1m"
    startTime: str = "0s"
    eraseFirst: int = 1
    eraseCount: int = 0

    @classmethod
    def arrival(
        cls,
        name: str,
        op: str,
        protocol: str,
        per_second: float,
        seconds: float,
        expected_ms: float,
        *,
        least_vus: int = 20,
        grace: str = "5s",
        **more: Any,
    ) -> Scenario:
        """VUs sized for calls of `expected_ms`: k6 adds more (up to maxVUs) when the
        server slows down, and counts iterations it could not start as dropped."""
        needed = math.ceil(per_second * expected_ms / 1000)
        return cls(
            name=name,
            op=op,
            protocol=protocol,
            rate=max(1, round(per_second * 60)),
            duration=f"{seconds:g}s",
            preAllocatedVUs=min(max(needed, 5), 400),
            maxVUs=min(max(needed * 4, least_vus), 1000),
            gracefulStop=grace,
            **more,
        )

    @property
    def per_second(self) -> float:
        return self.rate / 60.0

    @property
    def seconds(self) -> float:
        return float(self.duration.rstrip("s"))

    @property
    def offered(self) -> int:
        return math.floor(self.per_second * self.seconds)

    @property
    def latency(self) -> tuple[str, ...]:
        """Where its latency is read (the first with samples): k6's microsecond timer of
        a single call, the end-to-end time of DSAR's create + watch."""
        timer = "grpc_req_duration" if self.protocol == "grpc" else "http_req_duration"
        return ("kaireon_e2e",) if self.op == "dsar" else (timer, "kaireon_e2e")


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
    return dict((metrics.get(name) or {}).get("values") or {})


def read(
    metrics: dict[str, Any], tag: str = "", latency: tuple[str, ...] = ("kaireon_e2e",)
) -> Reading:
    """Counts, outcomes and the latency of the first of `latency` that has samples:
    every operation's end-to-end time (kaireon_e2e, ms resolution), or k6's microsecond
    timer of a single call (Scenario.latency)."""

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
    env: dict[str, str]  # what the plan ran against, SOAK_PLAN included
    output: str

    @property
    def metrics(self) -> dict[str, Any]:
        return dict(self.data.get("metrics", {}))

    @property
    def seconds(self) -> float:
        return float(self.data.get("state", {}).get("testRunDurationMs", 0.0)) / 1000

    def shown(self) -> str:
        """The command line that runs the plan again by hand (a bearer token left out)."""
        env = {"K6_NO_USAGE_REPORT": "true", **self.env}
        shown = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items() if k != "AUTHORIZATION")
        return f"{shown} {self.command[0]} run perf/k6/soak.js"


def run(
    plan: Sequence[Scenario],
    env: dict[str, str],
    *,
    workdir: Path,
    name: str,
    timeout: float,
    started: Callable[[int], None] | None = None,
) -> K6Run:
    """Runs perf/k6/soak.js over `plan` and reads its JSON summary. `env`: where and as
    whom (GRPC_TARGET, BASE_URL, TENANT, CUSTOMERS, AUTHORIZATION; k6/lib/config.js).

    `started` is given k6's pid once it runs (to sample its resources)."""
    exe = dev_tool("k6")
    if exe is None:
        raise RuntimeError("k6 not found: run tools/dev/setup.sh (dev group pins k6)")
    summary = workdir / f"{name}.k6.json"
    summary.unlink(missing_ok=True)
    cmd = [exe, "run", "--quiet", "--no-color", str(K6_DIR / "soak.js")]
    env = {**env, "SOAK_PLAN": json.dumps([asdict(s) for s in plan])}
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
    log = workdir / f"{name}.k6.log"
    log.write_text(output)
    # 99 = thresholds crossed: a result (the harness judges the figures), not a failure.
    if proc.returncode not in (0, 99) or not summary.exists():
        raise RuntimeError(f"k6 exited {proc.returncode} (output: {log}): {output[:1500]}")
    return K6Run(json.loads(summary.read_text()), cmd, env, output)
