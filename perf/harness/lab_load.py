"""k6 load through nginx onto the multi-host lab (tests/support/netns.py, imported
here as `kaireon_testkit.netns`): what the scale-out scenario
(harness/scenarios/scaleout.py) and the rolling-restart test
(tests/multihost/test_rolling_restart.py) share.

The load is a mix of provenance reads and erasures, gRPC and REST side by side,
open loop: four scenarios of perf/k6/soak.js (the operations of k6/lib/ops.js),
planned here like the soak's. The lab's replicas trust no headers (identity from
JWTs, as behind a real balancer), so k6 sends a bearer token.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from harness import k6, seed
from harness.soak_plan import PROTOCOLS
from harness.soak_report import duration
from kaireon_server.platform.config import Settings
from kaireon_server.platform.db import connect_database
from kaireon_testkit.server import bearer

# The mix's two operations: soak.js's operation, the expected call time (sizes the VUs).
MIX_OPS = {"read": ("provenance", 50), "erase": ("erasure", 200)}


async def migrate_and_seed(dsn: str, plan: seed.SeedPlan) -> seed.SeedReport:
    """Migrations and perf/run's seed (read population cust_…, erasure pool ecust_…),
    straight to the lab's PostgreSQL (its unix socket: no namespace in the way)."""
    # Settings need an identity source; this connection serves no calls.
    settings = Settings.from_env({"DATABASE_URL": dsn, "KAIREON_TRUST_HEADERS": "true"})
    db = await connect_database(settings)
    try:
        return await seed.seed(db, plan)
    finally:
        await db.close()


@dataclass(frozen=True)
class MixLoad:
    """The mix's offered load: each rate is per protocol (gRPC and REST)."""

    read_rate: int
    erase_rate: int
    seconds: float
    erase_offset: int = 0

    @property
    def offered_per_second(self) -> int:
        return 2 * (self.read_rate + self.erase_rate)

    @property
    def erasures(self) -> int:
        """Pool customers this run may erase (both protocols, k6's stop grace, headroom)."""
        return math.ceil(2 * self.erase_rate * (self.seconds + 10) * 1.25) + 10

    def describe(self) -> str:
        return (
            f"{self.offered_per_second}/s x {self.seconds:g}s: reads {self.read_rate}/s + "
            f"erasures {self.erase_rate}/s, each over gRPC and over REST"
        )

    def scenarios(self) -> list[k6.Scenario]:
        """read_grpc, read_rest, erase_grpc, erase_rest; each erasure scenario erases its
        own half of the pool slice."""
        out = []
        first = self.erase_offset + 1
        for name, rate in (("read", self.read_rate), ("erase", self.erase_rate)):
            op, expected_ms = MIX_OPS[name]
            count = self.erasures // 2 if name == "erase" else 0
            for protocol in PROTOCOLS if rate > 0 else ():
                out.append(
                    k6.Scenario.arrival(
                        f"{name}_{protocol}",
                        op,
                        protocol,
                        rate,
                        self.seconds,
                        expected_ms,
                        least_vus=40,
                        grace="10s",
                        phase="mix",
                        eraseFirst=first,
                        eraseCount=count,
                    )
                )
                first += count
        return out


@dataclass(kw_only=True)
class MixResult(k6.Reading):
    """The whole mix (latency: kaireon_e2e, millisecond resolution), its failed
    outcomes (ok left out) and, per operation (read/erase), p50, p99 and errors."""

    seconds: float
    by_op: dict[str, dict[str, float | None]]
    command: str = ""

    @property
    def rps(self) -> float:
        return self.ok / self.seconds if self.seconds > 0 else 0.0

    def describe(self) -> str:
        failed = ", ".join(f"{k} {v}" for k, v in self.outcomes.items()) or "none"
        return (
            f"{self.requests} calls, {self.errors} failed ({failed}), {self.dropped} dropped, "
            f"{self.rps:.1f} ok/s, p50 {duration(self.p50)}, p99 {duration(self.p99)}"
        )


def run_mix(
    load: MixLoad,
    *,
    grpc_target: str,
    base_url: str,
    tenant: str,
    customers: int,
    workdir: Path,
    name: str,
) -> MixResult:
    """Runs the mix (blocking) and reads its summary."""
    scenarios = load.scenarios()
    # A JWT the lab's replicas accept (the tests' KAIREON_JWT_HS256_SECRET).
    ((_, token),) = bearer(tenant, "admin", expires_in=int(load.seconds) + 600, sub="perf-k6")
    env = {
        "GRPC_TARGET": grpc_target,
        "BASE_URL": base_url,
        "TENANT": tenant,
        "CUSTOMERS": str(customers),
        "AUTHORIZATION": token,
    }
    done = k6.run(scenarios, env, workdir=workdir, name=name, timeout=load.seconds + 180)
    parts = {s.name: k6.read(done.metrics, f"scenario:{s.name}") for s in scenarios}
    failed: Counter[str] = Counter()
    for part in parts.values():
        failed.update({o: n for o, n in part.outcomes.items() if o != "ok"})
    by_op = {}
    for op, (soak_op, _) in MIX_OPS.items():
        lat = k6.metric_values(done.metrics, "kaireon_e2e", f"op:{soak_op}")
        errors = sum(p.errors for key, p in parts.items() if key.startswith(f"{op}_"))
        by_op[op] = {"p50": lat.get("p(50)"), "p99": lat.get("p(99)"), "errors": errors}
    whole = k6.read(done.metrics)
    return MixResult(
        **{**vars(whole), "outcomes": dict(failed), "outcome_latency": {}},
        seconds=done.seconds,
        by_op=by_op,
        command=done.shown(),
    )
