"""A long verification hashes in a child process (audit/offload.py) and finds what
the worker thread finds: the same valid result, the same first bad row."""

from __future__ import annotations

import asyncio

import pytest

from kaireon_server.audit import offload, tlog
from kaireon_server.audit import tlog_repository as repo
from kaireon_server.platform.audit_chain import AuditRow, insert_rows
from kaireon_server.platform.db import Database

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
