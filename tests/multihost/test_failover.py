"""PostgreSQL fails over under the replicas: a primary with a synchronous
streaming standby (pg_basebackup -R), the primary crashed (immediate stop) and
the standby promoted (pg_ctl promote). The replicas' DATABASE_URL names both
hosts with target_session_attrs=read-write; they reconnect to the new primary
by themselves within a bounded time, health follows, and no acknowledged
erasure or DSAR request is lost (synchronous replication)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import asyncpg
import grpc
import pytest

from kaireon.dsar.v1 import dsar_pb2, dsar_pb2_grpc
from kaireon.erasure.v1 import erasure_pb2, erasure_pb2_grpc
from kaireon_server.app import App
from kaireon_server.demo.seed import SeedSize, seed_tenant
from kaireon_server.platform.config import Settings
from tests.support.netns import Lab, LabPostgres, wait_serving
from tests.support.server import base_env, bearer

pytestmark = pytest.mark.slow

CUSTOMERS = 60
RECOVERED_WITHIN = 30.0  # seconds from the promotion to SERVING and calls succeeding


async def test_failover_to_a_synchronous_standby_loses_no_acknowledged_state(
    lab: Lab, lab_pg: LabPostgres, lab_env: dict[str, str], signing_key_path: Path, tenant: str
) -> None:
    primary = lab_pg
    seeder = App(
        Settings.from_env(
            base_env(
                primary.dsn(),
                COSIGN_KEY=str(signing_key_path),
                KAIREON_HTTP_PORT="off",
                KAIREON_DSAR_WORKERS="0",
            )
        )
    )
    await seeder.start()
    try:
        assert seeder.db is not None
        await seed_tenant(
            seeder.db, tenant, SeedSize(customers=CUSTOMERS, interactions_per_customer=3)
        )
    finally:
        await seeder.stop(grace=1)

    standby = await asyncio.to_thread(lab.standby, primary)
    con = await asyncpg.connect(primary.dsn())
    try:
        await con.execute("ALTER SYSTEM SET synchronous_standby_names = '*'")
        await con.execute("SELECT pg_reload_conf()")
        async with asyncio.timeout(30):
            while (
                await con.fetchval(
                    "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'"
                )
                != 1
            ):
                await asyncio.sleep(0.1)
    finally:
        await con.close()

    hosts = f"{primary.host.address}:5432,{standby.host.address}:5432"
    dsn = f"postgresql://postgres@{hosts}/postgres?target_session_attrs=read-write"
    replicas = [
        lab.replica(dsn, KAIREON_DSAR_WORKERS="0", KAIREON_DB_ACQUIRE_TIMEOUT="2", **lab_env)
        for _ in range(3)
    ]
    for replica in replicas:
        await asyncio.to_thread(replica.start)
    for replica in replicas:
        await wait_serving(replica)
    lb = lab.nginx(replicas)

    operator, admin = bearer(tenant, "operator"), bearer(tenant, "admin")
    acknowledged_dsar: list[str] = []
    acknowledged_erasures: list[str] = []
    failures: list[str] = []
    last_ok = 0.0
    stop = asyncio.Event()

    async with grpc.aio.insecure_channel(lb.grpc_target) as channel:
        dsar = dsar_pb2_grpc.DsarServiceStub(channel)
        erasure = erasure_pb2_grpc.ErasureServiceStub(channel)

        async def load() -> None:
            nonlocal last_ok
            n = 0
            while not stop.is_set():
                n += 1
                try:
                    if n % 2:
                        reply = await dsar.CreateDsarRequest(
                            dsar_pb2.CreateDsarRequestRequest(
                                request_type="export", subject_id="cust_00001"
                            ),
                            metadata=operator,
                            timeout=5,
                        )
                        acknowledged_dsar.append(reply.request.id)
                    else:
                        customer = f"cust_{(n // 2) % CUSTOMERS + 1:05d}"
                        await erasure.EraseCustomer(
                            erasure_pb2.EraseCustomerRequest(customer_id=customer),
                            metadata=admin,
                            timeout=5,
                        )
                        acknowledged_erasures.append(customer)
                    last_ok = time.monotonic()
                except grpc.aio.AioRpcError as exc:
                    failures.append(exc.code().name)
                    await asyncio.sleep(0.1)
                await asyncio.sleep(0.05)

        generator = asyncio.create_task(load())
        await asyncio.sleep(2)
        before = len(acknowledged_dsar) + len(acknowledged_erasures)
        assert before > 0 and not failures, failures
        await asyncio.to_thread(primary.stop, "immediate")  # the primary's machine dies
        await asyncio.sleep(1)
        await asyncio.to_thread(standby.promote)
        promoted = time.monotonic()
        async with asyncio.timeout(RECOVERED_WITHIN + 30):
            for replica in replicas:
                await wait_serving(replica, timeout=RECOVERED_WITHIN + 30)
            while last_ok < promoted:
                await asyncio.sleep(0.1)
        serving_in = time.monotonic() - promoted
        calls_in = last_ok - promoted
        await asyncio.sleep(2)
        stop.set()
        await generator

    assert serving_in < RECOVERED_WITHIN and calls_in < RECOVERED_WITHIN
    # Only outage codes while the database was away.
    assert set(failures) <= {"UNAVAILABLE", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED"}, failures
    new_primary = await asyncpg.connect(standby.dsn())
    try:
        assert not await new_primary.fetchval("SELECT pg_is_in_recovery()")
        stored = {
            str(r["id"])
            for r in await new_primary.fetch(
                "SELECT id FROM dsar_request WHERE tenant_id = $1", tenant
            )
        }
        left = {
            r["customer_id"]
            for r in await new_primary.fetch(
                "SELECT DISTINCT customer_id FROM interaction_history WHERE tenant_id = $1",
                tenant,
            )
        }
    finally:
        await new_primary.close()
    assert set(acknowledged_dsar) <= stored, set(acknowledged_dsar) - stored
    assert not (set(acknowledged_erasures) & left), set(acknowledged_erasures) & left
    print(
        f"\nFIGURE PostgreSQL failover (immediate stop, promote after 1 s, synchronous standby): "
        f"all 3 replicas SERVING {serving_in:.1f}s and calls succeeding {calls_in:.1f}s after "
        f"the promotion; {len(acknowledged_dsar)} DSAR requests and {len(acknowledged_erasures)} "
        f"erasures acknowledged, 0 lost; {len(failures)} calls refused during the outage"
    )
