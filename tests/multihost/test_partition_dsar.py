"""A replica silently cut off from PostgreSQL (nft DROP: no FIN, no RST) while
it holds a DSAR export's lease: another replica takes the job over and finishes
it; exactly one export is stored; and the cut-off replica, healed afterwards,
writes nothing more (its writes are fenced by lease owner and attempt).
PostgreSQL (tcp_keepalives_* / tcp_user_timeout, set by the server) ends
the cut-off replica's sessions within a bounded time, measured here."""

from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path

import asyncpg
import grpc
import pytest

from kaireon.dsar.v1 import dsar_pb2, dsar_pb2_grpc
from kaireon_server.app import App
from kaireon_server.demo.seed import SeedSize, seed_tenant
from kaireon_server.platform.config import Settings
from tests.dsar.conftest import add_interactions, assert_canonical
from tests.support.netns import Lab, LabPostgres, wait_serving
from tests.support.server import base_env, bearer

pytestmark = pytest.mark.slow

ROWS = 2000  # about 400 KB of export: 100 chunks of 4 KiB, 40 ms apart
WORKER = {
    "KAIREON_DSAR_WORKERS": "1",
    "KAIREON_DSAR_CHUNK_BYTES": "4096",
    "KAIREON_DSAR_THROTTLE_MS": "40",
    "KAIREON_DSAR_LEASE_SECONDS": "2",
    "KAIREON_DSAR_HEARTBEAT_SECONDS": "0.4",
    "KAIREON_DSAR_POLL_SECONDS": "0.2",
    "KAIREON_DSAR_RETRY_BASE_SECONDS": "0.2",
    "KAIREON_DB_ACQUIRE_TIMEOUT": "2",
    "KAIREON_DB_STATEMENT_TIMEOUT_MS": "5000",
}
# The server's keepalive settings (platform/db/database.PEER_LOSS_SETTINGS):
# idle 10 s + 3 probes x 5 s, or tcp_user_timeout 30 s with data unacknowledged.
SESSIONS_GONE_WITHIN = 90.0  # measured 22-35 s idle, 62 s once with the machine loaded


async def sessions_from(owner: asyncpg.Connection, address: str) -> int:
    value = await owner.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE client_addr = $1::inet", address
    )
    return int(value)


async def test_a_partitioned_lease_holder_is_replaced_and_fenced(
    lab: Lab, lab_pg: LabPostgres, lab_env: dict[str, str], signing_key_path: Path, tenant: str
) -> None:
    # Seed through an in-process server on the unix socket (no DSAR worker of its own).
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
        await seed_tenant(seeder.db, tenant, SeedSize(customers=2, interactions_per_customer=5))
        await add_interactions(seeder.db, tenant, "cust_00001", ROWS)
    finally:
        await seeder.stop(grace=1)

    dsn = lab_pg.tcp_dsn("postgres")
    replicas = [lab.replica(dsn, **lab_env, **WORKER) for _ in range(3)]
    for replica in replicas:
        await asyncio.to_thread(replica.start)
    for replica in replicas:
        await wait_serving(replica)
    lb = lab.nginx(replicas)
    auth = bearer(tenant, "operator")
    owner = await asyncpg.connect(lab_pg.dsn())
    try:
        async with grpc.aio.insecure_channel(lb.grpc_target) as channel:
            stub = dsar_pb2_grpc.DsarServiceStub(channel)
            created = await stub.CreateDsarRequest(
                dsar_pb2.CreateDsarRequestRequest(request_type="export", subject_id="cust_00001"),
                metadata=auth,
                timeout=10,
            )
            request_id = created.request.id

            async def job() -> asyncpg.Record:
                row = await owner.fetchrow(
                    "SELECT status, progress, lease_owner, attempts, export_attempt, "
                    "export_chunks, export_digest FROM dsar_request "
                    "WHERE tenant_id = $1 AND id = $2::uuid",
                    tenant,
                    request_id,
                )
                assert row is not None
                return row

            async with asyncio.timeout(60):
                while True:
                    state = await job()
                    if state["status"] == "processing" and state["progress"] >= 10:
                        break
                    assert state["status"] in ("pending", "processing"), state
                    await asyncio.sleep(0.05)
            # The replica whose worker holds the lease: the owner names its pid.
            pid = int(state["lease_owner"].split(":")[1])
            holders = [r for r in replicas if r.proc is not None and r.proc.pid == pid]
            assert len(holders) == 1, (
                state["lease_owner"],
                [r.proc.pid for r in replicas if r.proc],
            )
            holder = holders[0]
            first_attempt = state["attempts"]

            cut = time.monotonic()
            lab.partition(holder.host, lab_pg.host)

            async with asyncio.timeout(120):
                while (state := await job())["status"] not in ("completed", "failed"):
                    await asyncio.sleep(0.1)
            taken_over_in = time.monotonic() - cut
            assert state["status"] == "completed"
            assert state["attempts"] > first_attempt

            # PostgreSQL notices the silent peer on its own and ends its sessions
            # (and with them any session advisory lock they held).
            async with asyncio.timeout(SESSIONS_GONE_WITHIN + 30):
                while await sessions_from(owner, holder.host.address) > 0:
                    await asyncio.sleep(0.5)
            sessions_gone_in = time.monotonic() - cut
            assert sessions_gone_in < SESSIONS_GONE_WITHIN

            # Heal: whatever the cut-off worker still had queued may now arrive.
            lab.heal(holder.host)
            await wait_serving(holder)
            await asyncio.sleep(3)
            final = await job()
            assert (final["export_attempt"], final["export_digest"]) == (
                state["export_attempt"],
                state["export_digest"],
            )
            assert final["status"] == "completed"

            parts = []
            async for item in stub.StreamDsarExport(
                dsar_pb2.StreamDsarExportRequest(id=request_id), metadata=auth, timeout=30
            ):
                parts.append(item.chunk.data)
            document = b"".join(parts)

        chunks = await owner.fetch(
            "SELECT attempt, seq, data FROM dsar_export_chunk "
            "WHERE tenant_id = $1 AND request_id = $2::uuid ORDER BY attempt, seq",
            tenant,
            request_id,
        )
        completions = await owner.fetchval(
            "SELECT count(*) FROM audit_log WHERE tenant_id = $1 AND entity_id = $2 "
            "AND action = 'dsar_export_completed'",
            tenant,
            request_id,
        )
        events = await owner.fetch(
            "SELECT status FROM dsar_request_event WHERE tenant_id = $1 "
            "AND request_id = $2::uuid ORDER BY version",
            tenant,
            request_id,
        )
    finally:
        await owner.close()

    # Exactly one attempt's chunks, 0..n-1 once each, and they are the export.
    assert {c["attempt"] for c in chunks} == {final["export_attempt"]}
    assert [c["seq"] for c in chunks] == list(range(final["export_chunks"]))
    stored = b"".join(bytes(c["data"]) for c in chunks)
    assert hashlib.sha256(stored).hexdigest() == final["export_digest"]
    assert document == stored
    assert assert_canonical(document)["counts"]["interactions"] == ROWS + 5
    assert completions == 1
    statuses = [e["status"] for e in events]
    assert statuses.count("completed") == 1 and statuses[-1] == "completed"
    print(
        f"\nFIGURE DSAR lease holder partitioned (nft DROP): another replica completed "
        f"the export {taken_over_in:.1f}s after the cut (lease 2 s), PostgreSQL ended the "
        f"cut-off replica's sessions after {sessions_gone_in:.1f}s, stored exports 1, "
        f"writes after the heal 0"
    )
