"""A rolling restart of every replica behind nginx under steady k6 load fails no
call: each replica is taken out of the balancer (reload), drained (SIGTERM,
KAIREON_SHUTDOWN_GRACE), started again, and put back once its health says
SERVING; the order a Kubernetes rollout follows (deploy/kubernetes/).

The load is harness.lab_load's mix (perf/k6/soak.js): provenance reads and erasures,
gRPC and REST side by side, open loop; "failed" is read from k6's summary JSON.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
from pathlib import Path

import pytest

from harness import lab_load, seed
from harness.soak_report import duration
from tests.support.netns import Lab, LabPostgres, wait_serving

pytestmark = pytest.mark.slow

# Per protocol: 2 x (8 + 2) = 20 calls/s offered, the rate of the earlier test.
LOAD = lab_load.MixLoad(read_rate=8, erase_rate=2, seconds=60)
CUSTOMERS = 50
STEADY = 3.0  # seconds of load before the first restart


@pytest.mark.timeout(300)
async def test_rolling_restart_behind_nginx_fails_no_call(
    lab: Lab, lab_pg: LabPostgres, lab_env: dict[str, str], tenant: str, tmp_path: Path
) -> None:
    plan = seed.SeedPlan(
        tenant=tenant,
        customers=CUSTOMERS,
        erasure_pool=LOAD.erasures,
        heavy_customers=0,
        heavy_rows=0,
    )
    await lab_load.migrate_and_seed(lab_pg.dsn(), plan)
    dsn = lab_pg.tcp_dsn("postgres")
    replicas = [lab.replica(dsn, KAIREON_SHUTDOWN_GRACE="10", **lab_env) for _ in range(3)]
    for replica in replicas:
        await asyncio.to_thread(replica.start)
    for replica in replicas:
        await wait_serving(replica)
    # What is tested is the replicas' drain and return, not nginx's own reloads: REST
    # clients get a connection per request (render_nginx_conf says why).
    lb = lab.nginx(replicas, client_keepalive=False)
    with await asyncio.to_thread(urllib.request.urlopen, f"{lb.rest}/healthz", timeout=5) as reply:
        assert reply.headers["Connection"] == "close", dict(reply.headers)

    k6_run = asyncio.create_task(
        asyncio.to_thread(
            lab_load.run_mix,
            LOAD,
            grpc_target=lb.grpc_target,
            base_url=lb.rest,
            tenant=tenant,
            customers=CUSTOMERS,
            workdir=tmp_path,
            name="rolling-restart",
        )
    )
    await asyncio.sleep(STEADY)
    began = time.monotonic()
    for index, replica in enumerate(replicas):
        others = [r for j, r in enumerate(replicas) if j != index]
        lb.reload(others)
        await asyncio.sleep(1.5)  # nginx's old workers finish what they carry
        code = await asyncio.to_thread(replica.stop)
        assert code == 0, replica.log_lines[-20:]
        await asyncio.to_thread(replica.start)
        await wait_serving(replica)
        lb.reload(replicas)
        await asyncio.sleep(1.5)
    rollout = time.monotonic() - began
    # The whole rollout ran under load, with steady load after it too.
    assert not k6_run.done() and STEADY + rollout < LOAD.seconds - 2, (
        f"the rollout ({rollout:.0f} s) outlasted k6's {LOAD.seconds:g} s of load"
    )
    result = await k6_run

    offered = LOAD.offered_per_second * LOAD.seconds
    assert result.requests >= offered * 0.8, (result.describe(), offered)
    assert result.errors == 0, f"{result.describe()}\n{lb.error_log()}"
    # Every replica served calls over both protocols (and so came back into nginx).
    used = lb.upstreams_used()
    for replica in replicas:
        assert used.get(f"{replica.host.address}:50051", 0) > 0, used
        assert used.get(f"{replica.host.address}:8080", 0) > 0, used
    print(
        f"\nFIGURE rolling restart of 3 replicas behind nginx under k6 "
        f"({LOAD.describe()}): rollout {rollout:.1f} s; {result.describe()}; "
        f"p99 reads {duration(result.by_op['read']['p99'])}, "
        f"erasures {duration(result.by_op['erase']['p99'])}"
    )
