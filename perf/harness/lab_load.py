"""k6 load through nginx onto the multi-host lab (tests/support/netns.py, imported
here as `kaireon_testkit.netns`): what the scale-out scenario
(harness/scenarios/scaleout.py) and the rolling-restart test
(tests/multihost/test_rolling_restart.py) share.

The load is perf/k6/mix.js: provenance reads and erasures, gRPC and REST side by
side, open loop. The lab's replicas trust no headers (identity from JWTs, as
behind a real balancer), so k6 sends a bearer token.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt

from harness import k6, seed
from kaireon_server.platform.config import Settings
from kaireon_server.platform.db import connect_database
from kaireon_testkit.server import JWT_SECRET

OUTCOMES = ("ok", "shed", "unavailable", "timeout", "network", "error")


def bearer_token(tenant: str, role: str, seconds: float) -> str:
    """An HS256 JWT the lab's replicas accept (tests' KAIREON_JWT_HS256_SECRET)."""
    claims = {
        "tenant_id": tenant,
        "role": role,
        "sub": "perf-k6",
        "exp": int(time.time() + seconds),
    }
    return "Bearer " + jwt.encode(claims, JWT_SECRET, algorithm="HS256")


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
    """perf/k6/mix.js's offered load: each rate is per protocol (gRPC and REST)."""

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

    def env(
        self, *, grpc_target: str, base_url: str, tenant: str, customers: int
    ) -> dict[str, str]:
        return {
            "GRPC_TARGET": grpc_target,
            "BASE_URL": base_url,
            "TENANT": tenant,
            "CUSTOMERS": str(customers),
            "READ_RATE": str(self.read_rate),
            "ERASE_RATE": str(self.erase_rate),
            "DURATION": f"{self.seconds:g}s",
            "ERASE_OFFSET": str(self.erase_offset),
            "ERASE_POOL": str(self.erase_offset + self.erasures),
            "AUTHORIZATION": bearer_token(tenant, "admin", self.seconds + 600),
            # The figures are judged by the caller; k6's exit code says nothing more.
            "MAX_ERROR_RATE": "1",
        }


@dataclass
class MixResult:
    requests: int
    errors: int
    dropped: int  # iterations k6 could not start on time: offered, never sent
    seconds: float
    p50: float | None  # ms, the whole mix (kaireon_e2e: millisecond resolution)
    p95: float | None
    p99: float | None
    by_op: dict[str, dict[str, float | None]]  # read/erase -> p50, p99, errors
    outcomes: dict[str, int]  # failed outcome -> count (ok left out)
    command: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> int:
        return self.requests - self.errors

    @property
    def rps(self) -> float:
        return self.ok / self.seconds if self.seconds > 0 else 0.0

    def describe(self) -> str:
        failed = ", ".join(f"{k} {v}" for k, v in self.outcomes.items()) or "none"
        return (
            f"{self.requests} calls, {self.errors} failed ({failed}), {self.dropped} dropped, "
            f"{self.rps:.1f} ok/s, p50 {ms(self.p50)}, p99 {ms(self.p99)}"
        )


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"


def read_mix(done: k6.K6Run) -> MixResult:
    metrics: dict[str, Any] = done.data.get("metrics", {})

    def values(name: str) -> dict[str, Any]:
        return k6.metric_values(metrics, name)

    def count(name: str) -> int:
        return int(values(name).get("count", 0))

    requests = count("kaireon_requests")
    by_op: dict[str, dict[str, float | None]] = {}
    for op in ("read", "erase"):
        lat = values(f"kaireon_e2e{{op:{op}}}")
        rate = values(f"kaireon_errors{{op:{op}}}")
        by_op[op] = {
            "p50": lat.get("p(50)"),
            "p99": lat.get("p(99)"),
            "errors": rate.get("passes"),
        }
    outcomes = {
        outcome: n
        for outcome in OUTCOMES[1:]
        if (n := count(f"kaireon_requests{{outcome:{outcome}}}")) > 0
    }
    lat = values("kaireon_e2e")
    return MixResult(
        requests=requests,
        errors=int(values("kaireon_errors").get("passes", 0)),
        dropped=count("dropped_iterations"),
        seconds=float(done.data.get("state", {}).get("testRunDurationMs", 0.0)) / 1000.0,
        p50=lat.get("p(50)"),
        p95=lat.get("p(95)"),
        p99=lat.get("p(99)"),
        by_op=by_op,
        outcomes=outcomes,
        command=" ".join(done.command),
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
    """Runs perf/k6/mix.js (blocking) and reads its summary."""
    env = load.env(grpc_target=grpc_target, base_url=base_url, tenant=tenant, customers=customers)
    done = k6.run_summary("mix.js", env, workdir=workdir, name=name, timeout=load.seconds + 180)
    return read_mix(done)
