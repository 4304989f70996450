"""A long verification hashes in a child process (audit/offload.py) and finds what
the worker thread finds: the same valid result, the same first bad row."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from kaireon.audit.v1 import audit_pb2, audit_pb2_grpc
from kaireon_server.audit import offload, tlog
from kaireon_server.audit import tlog_repository as repo
from kaireon_server.platform.audit_chain import AuditRow, insert_rows
from kaireon_server.platform.db import Database
from tests.support.server import ServerProcess, base_env, metadata

ROWS = 12


async def _integrated_log(db: Database, tenant: str) -> None:
    async with db.transaction(tenant) as con:
        await insert_rows(
            con,
            tenant,
            [AuditRow("offload_test", "thing", f"t{i}", "test", {"i": i}) for i in range(ROWS)],
        )
    integrator = tlog.Integrator(db, tlog.TlogSettings())
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while True:
        await integrator.integrate(tenant)  # the server's own integrator may hold the lock
        async with db.transaction(tenant, readonly=True) as con:
            checkpoint = await repo.latest_checkpoint(con, tenant)
        if checkpoint is not None and int(checkpoint["size"]) == ROWS:
            return
        assert loop.time() < deadline
        await asyncio.sleep(0.05)


async def _full(db: Database, tenant: str) -> tlog.TlogVerifyResult:
    items = [
        item
        async for item in tlog.verify_range_stream(
            db, tlog.TlogSettings(), tenant_id=tenant, start=0, end=0, limit=None
        )
    ]
    result = items[-1]
    assert isinstance(result, tlog.TlogVerifyResult)
    return result


@pytest.mark.parametrize("in_child", [True, False], ids=["child process", "thread"])
async def test_a_long_verification_in_a_child_finds_what_a_thread_finds(
    db: Database, tenant: str, monkeypatch: pytest.MonkeyPatch, in_child: bool
) -> None:
    monkeypatch.setattr(offload, "OFFLOAD_ROWS", 0 if in_child else 10**9)
    assert offload.Hasher(ROWS).offloaded is in_child
    await _integrated_log(db, tenant)

    valid = await _full(db, tenant)
    assert (valid.valid, valid.rows_checked, valid.tree_size) == (True, ROWS, ROWS)
    chain = await tlog.verify_chain_incremental(db, tenant_id=tenant)
    assert (chain.result.valid, chain.result.rows_checked) == (True, ROWS)

    async with db.owner_connection() as con:
        await con.execute(
            "UPDATE audit_log SET changes = '{\"i\": 999}'::jsonb WHERE tenant_id = $1 AND seq = 5",
            tenant,
        )
    tampered = await _full(db, tenant)
    assert not tampered.valid
    assert (tampered.first_invalid_seq, tampered.reason) == (5, "integrity_hash_mismatch")
    assert tampered.rows_checked == 4


@pytest.mark.slow
async def test_the_real_server_process_streams_a_long_verification_through_its_child(
    database_url: str, db: Database, tenant: str
) -> None:
    """`python -m kaireon_server` spawns the child (its __main__ is guarded) and the
    stream of a log longer than OFFLOAD_ROWS verifies to the end."""
    rows = offload.OFFLOAD_ROWS + 1
    async with db.transaction(tenant) as con:
        await insert_rows(
            con, tenant, [AuditRow("offload_test", "thing", f"t{i}", "test") for i in range(rows)]
        )
    server = ServerProcess(base_env(database_url)).start()
    try:
        async with grpc.aio.insecure_channel(server.target) as channel:
            stub = audit_pb2_grpc.AuditServiceStub(channel)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 60
            while True:  # the servers' integrators checkpoint the rows
                reply = await stub.GetCheckpoint(
                    audit_pb2.GetCheckpointRequest(), metadata=metadata(tenant)
                )
                if reply.checkpoint.tree_size == rows:
                    break
                assert loop.time() < deadline
                await asyncio.sleep(0.2)
            messages = [
                m
                async for m in stub.StreamVerifyLog(
                    audit_pb2.StreamVerifyLogRequest(), metadata=metadata(tenant), timeout=120
                )
            ]
    finally:
        assert server.stop() == 0
    result = messages[-1].result
    assert (result.valid, result.rows_checked, result.tree_size) == (True, rows, rows)
    assert len(messages) > 2  # progress before the result
