"""A watch reads the database once per state change it is told of, not twice:
having read up to the request's version, it waits for the next notification
(its subscription predates the read) instead of reading again at once."""

from __future__ import annotations

import asyncio

import pytest

from kaireon_server.dsar import repository
from kaireon_server.platform.db import Database
from tests.dsar.conftest import create, watch_states


async def _set_status(db: Database, tenant: str, request_id: str, status: str) -> None:
    async with db.transaction(tenant) as con:
        await con.execute(
            "UPDATE dsar_request SET status = $3, error = CASE WHEN $3 = 'failed'"
            " THEN 'stopped by the test' END WHERE tenant_id = $1 AND id = $2::uuid",
            tenant,
            request_id,
            status,
        )


async def test_a_watch_reads_once_per_state_it_is_told_of(
    stub, seeded, db: Database, no_session_workers, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[int] = []
    watch_read = repository.watch_read

    async def counted(con, tenant_id, request_id, since):  # type: ignore[no-untyped-def]
        reads.append(since)
        return await watch_read(con, tenant_id, request_id, since)

    monkeypatch.setattr(repository, "watch_read", counted)
    request = await create(stub, seeded, "cust_00001")
    seen: list[str] = []
    changed = asyncio.Event()

    def on_state(state) -> None:  # type: ignore[no-untyped-def]
        seen.append(state.status)
        changed.set()

    watcher = asyncio.create_task(
        watch_states(stub, seeded, request.id, timeout=30, on_state=on_state)
    )
    for status in ("processing", "failed"):
        async with asyncio.timeout(10):
            while not seen:
                await changed.wait()
                changed.clear()
        # Time for a read the watch would make at once after each state.
        await asyncio.sleep(0.3)
        await _set_status(db, seeded, request.id, status)
        async with asyncio.timeout(10):
            while seen[-1] != status:
                await changed.wait()
                changed.clear()
    states = await watcher
    assert [s.status for s in states] == ["pending", "processing", "failed"]
    # The first state, then one read per notification: 3, where it used to be 4.
    assert len(reads) == 3, reads
