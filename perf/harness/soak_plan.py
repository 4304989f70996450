"""The soak's scenarios: which operation, protocol, rate and time window each
k6 constant-arrival-rate scenario gets (perf/k6/soak.js materialises them).

Three phases in one k6 run (perf/README.md, "Soak"): steady (the mix; growth is
read over it), burst (far more than the machine serves, of the calls that hold
a database connection: refused fast or queued?) and recovery (the mix again).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from harness.k6 import Scenario

# Share of the steady rate per operation (split evenly over gRPC and REST).
# DSAR exports cost the most CPU per call, provenance reads the least.
STEADY_MIX: dict[str, float] = {"provenance": 0.5, "erasure": 0.2, "flow": 0.2, "dsar": 0.1}
BURST_OPS: tuple[str, ...] = ("provenance", "erasure", "flow")
PROTOCOLS: tuple[str, ...] = ("grpc", "rest")

# The client deadline per operation (lib/ops.js): a VU is busy for at most this long.
DEADLINE_S = {"provenance": 10, "erasure": 30, "flow": 10, "dsar": 40}


@dataclass(frozen=True)
class Phase:
    name: str
    start: float
    seconds: float

    @property
    def end(self) -> float:
        return self.start + self.seconds


@dataclass(frozen=True)
class SoakPlan:
    rate: float
    seconds: float
    burst_rate: float
    burst_seconds: float
    recovery_seconds: float
    phases: tuple[Phase, ...]
    scenarios: tuple[Scenario, ...]

    @property
    def erasure_pool(self) -> int:
        """Customers the erasure scenarios may consume (ecust_0000001…)."""
        return max((s.eraseFirst + s.eraseCount - 1 for s in self.scenarios), default=0)

    def describe(self) -> str:
        mix = ", ".join(f"{op} {share:.0%}" for op, share in STEADY_MIX.items())
        text = f"steady {self.rate:g}/s for {self.seconds:g}s ({mix}; half gRPC, half REST)"
        if self.burst_seconds > 0:
            ops = ", ".join(BURST_OPS)
            text += f", burst {self.burst_rate:g}/s for {self.burst_seconds:g}s ({ops})"
        if self.recovery_seconds > 0:
            text += f", recovery {self.rate:g}/s for {self.recovery_seconds:g}s"
        return text


def _scenario(phase: Phase, op: str, protocol: str, per_second: float) -> Scenario:
    """Enough VUs to keep offering while the server is slow to answer, up to the client
    deadline, so that a late answer counts as late (or as a timeout), not as an
    iteration k6 had no VU for (dropped); capped, as every VU costs k6 about 1 MB and
    a reflection call on its first connection.

    The steady and recovery phases start with all of them: a VU k6 creates during
    the run takes long enough on a busy machine to drop iterations meanwhile (a
    generator artefact). The burst starts with two seconds' worth and lets k6 add
    the rest, as a sudden overload would."""
    most = min(150, max(5, math.ceil(per_second * DEADLINE_S[op])))
    burst = phase.name == "burst"
    return Scenario(
        name=f"{phase.name}_{op}_{protocol}",
        phase=phase.name,
        op=op,
        protocol=protocol,
        rate=max(1, round(per_second * 60)),
        startTime=f"{phase.start:g}s",
        duration=f"{phase.seconds:g}s",
        preAllocatedVUs=min(most, max(10, math.ceil(per_second * 2))) if burst else most,
        maxVUs=most,
        # Lets the last DSAR watches reach a terminal state before k6 stops them.
        gracefulStop=f"{DEADLINE_S[op]}s",
    )


def plan(
    rate: float,
    seconds: float,
    *,
    burst_rate: float,
    burst_seconds: float,
    recovery_seconds: float,
) -> SoakPlan:
    if rate <= 0 or seconds <= 0:
        raise ValueError("the soak needs a positive rate and duration")
    phases = [Phase("steady", 0.0, seconds)]
    if burst_seconds > 0:
        phases.append(Phase("burst", seconds, burst_seconds))
    if recovery_seconds > 0:
        phases.append(Phase("recovery", seconds + burst_seconds, recovery_seconds))
    burst_mix = {op: 1.0 / len(BURST_OPS) for op in BURST_OPS}
    scenarios: list[Scenario] = []
    first = 1
    for phase in phases:
        total, mix = (burst_rate, burst_mix) if phase.name == "burst" else (rate, STEADY_MIX)
        for op, share in mix.items():
            for protocol in PROTOCOLS:
                s = _scenario(phase, op, protocol, total * share / len(PROTOCOLS))
                if op == "erasure":
                    # Its own slice of never-erased customers, with headroom for k6
                    # starting an iteration or two more than rate x duration.
                    count = math.ceil(s.per_second * s.seconds * 1.1) + 10
                    s = replace(s, eraseFirst=first, eraseCount=count)
                    first += count
                scenarios.append(s)
    return SoakPlan(
        rate, seconds, burst_rate, burst_seconds, recovery_seconds, tuple(phases), tuple(scenarios)
    )
