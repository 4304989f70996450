"""50 ms ± 20 ms between the replicas and PostgreSQL: calls through nginx still
meet their deadlines, and their latency is recorded.

The delay is `tc netem delay 50ms 20ms` on PostgreSQL's interface where the
kernel has sch_netem. Where it has not (the lab machine: CONFIG_NET_SCH_NETEM
and CONFIG_MODULES are off, tc answers "Specified qdisc kind is unknown"; see
tests/support/netns.py), a user-space proxy (netns.DelayProxy) adds the same
delay to every round trip instead: a substitution, which the printed figure
names, together with tc's error."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from pathlib import Path

import grpc
import pytest

from kaireon.dsar.v1 import dsar_pb2, dsar_pb2_grpc
from kaireon.erasure.v1 import erasure_pb2, erasure_pb2_grpc
from kaireon.flow.v1 import flow_pb2, flow_pb2_grpc
from kaireon_server.app import App
from kaireon_server.demo.seed import SeedSize, seed_tenant
from kaireon_server.platform.config import Settings
from tests.support.netns import DelayProxy, Lab, LabPostgres, wait_serving
from tests.support.server import base_env, bearer

pytestmark = pytest.mark.slow

DEADLINE = 5.0  # seconds, every call
CALLS = 30  # of each kind


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


async def test_calls_meet_their_deadlines_with_50ms_to_postgres(
    lab: Lab, lab_pg: LabPostgres, lab_env: dict[str, str], signing_key_path: Path, tenant: str
) -> None:
    # Migrate and seed over the unix socket, without the delay.
    seeder = App(
        Settings.from_env(
            base_env(
                lab_pg.dsn(),
                COSIGN_KEY=str(signing_key_path),
                KAIREON_HTTP_PORT="off",
                KAIREON_DSAR_WORKERS="0",
            )
        )
    )
    await seeder.start()
    try:
        assert seeder.db is not None
        await seed_tenant(seeder.db, tenant, SeedSize(customers=CALLS, interactions_per_customer=3))
    finally:
        await seeder.stop(grace=1)

    proxy: DelayProxy | None = None
    netem_missing = lab.netem_unavailable()
    if netem_missing is None:
        lab.netem(lab_pg.host, delay_ms=50, jitter_ms=20)
        dsn, delay = lab_pg.tcp_dsn("postgres"), "tc netem on PostgreSQL's eth0"
    else:
        proxy = await DelayProxy(lab, lab_pg.host, delay=0.05, jitter=0.02).start()
        dsn = proxy.dsn("postgres")
        delay = f"user-space DelayProxy, not tc netem ({netem_missing})"
    try:
        replicas = [lab.replica(dsn, KAIREON_DSAR_WORKERS="0", **lab_env) for _ in range(3)]
        for replica in replicas:
            await asyncio.to_thread(replica.start)
        for replica in replicas:
            await wait_serving(replica)
        lb = lab.nginx(replicas)
        latencies: dict[str, list[float]] = {
            "ListRuns": [],
            "CreateDsarRequest": [],
            "EraseCustomer": [],
        }
        async with grpc.aio.insecure_channel(lb.grpc_target) as channel:
            flow = flow_pb2_grpc.FlowRunnerServiceStub(channel)
            dsar = dsar_pb2_grpc.DsarServiceStub(channel)
            erasure = erasure_pb2_grpc.ErasureServiceStub(channel)

            async def timed(name: str, call: Awaitable[object]) -> None:
                started = time.monotonic()
                await call
                latencies[name].append(time.monotonic() - started)

            for i in range(CALLS):
                # Three concurrent calls at a time: one of each kind.
                await asyncio.gather(
                    timed(
                        "ListRuns",
                        flow.ListRuns(
                            flow_pb2.ListRunsRequest(),
                            metadata=bearer(tenant, "viewer"),
                            timeout=DEADLINE,
                        ),
                    ),
                    timed(
                        "CreateDsarRequest",
                        dsar.CreateDsarRequest(
                            dsar_pb2.CreateDsarRequestRequest(
                                request_type="export", subject_id="cust_00001"
                            ),
                            metadata=bearer(tenant, "operator"),
                            timeout=DEADLINE,
                        ),
                    ),
                    timed(
                        "EraseCustomer",
                        erasure.EraseCustomer(
                            erasure_pb2.EraseCustomerRequest(customer_id=f"cust_{i + 1:05d}"),
                            metadata=bearer(tenant, "admin"),
                            timeout=DEADLINE,
                        ),
                    ),
                )
    finally:
        if proxy is not None:
            await proxy.close()

    figures = []
    for name, values in latencies.items():
        assert len(values) == CALLS
        assert max(values) < DEADLINE
        # At least one delayed round trip each: the delay was really in the path.
        assert min(values) >= 0.03, (name, min(values))
        figures.append(
            f"{name} p50 {percentile(values, 0.5) * 1000:.0f} ms, "
            f"p99 {percentile(values, 0.99) * 1000:.0f} ms"
        )
    print(
        f"\nFIGURE 50 ms +- 20 ms replica -> PostgreSQL ({delay}), {CALLS} of each call "
        f"through nginx, all within the {DEADLINE:.0f} s deadline: " + "; ".join(figures)
    )
