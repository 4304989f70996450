"""The job queue: watchers across processes, dead and stopped workers, retries, failure.

Workers here are real server processes (or in-process servers with their own
settings) on the session database; the session server's own workers are
parked so each test decides who runs a job. Exports are slowed down with the
throttle setting (a pause per stored chunk) so a worker can be caught mid-job.
"""

from __future__ import annotations

import asyncio
import signal
from itertools import groupby

import grpc
import pytest

from kaireon.dsar.v1 import dsar_pb2
from kaireon_server.platform.db import Database
from tests.dsar.conftest import (
    add_interactions,
    assert_canonical,
    audit_actions,
    create,
    download,
    stored_attempts,
    wait_done,
    watch_states,
    worker_env,
)
from tests.support.server import ServerProcess, metadata

pytestmark = pytest.mark.slow

ROWS = 2000  # about 400 KB of export, 100 chunks of 4 KiB


def _slow(**overrides: str) -> dict[str, str]:
    return worker_env(KAIREON_DSAR_CHUNK_BYTES="4096", KAIREON_DSAR_THROTTLE_MS="40", **overrides)


async def _start_process(env: dict[str, str]) -> ServerProcess:
    process = ServerProcess(env)
    await asyncio.to_thread(process.start)
    return process


async def _watch_in_background(stub, tenant: str, request_id: str) -> asyncio.Task:
    """A watch running in a task; returns once it has received the current state."""
    first = asyncio.Event()
    task = asyncio.create_task(
        watch_states(stub, tenant, request_id, timeout=120, on_state=lambda _s: first.set())
    )
    async with asyncio.timeout(10):
        await first.wait()
    return task


async def _until_progress(stub, tenant: str, request_id: str, percent: int) -> None:
    """Poll until the job is processing at `percent` or more."""
    async with asyncio.timeout(60):
        while True:
            reply = await stub.GetDsarRequest(
                dsar_pb2.GetDsarRequestRequest(id=request_id), metadata=metadata(tenant, "operator")
            )
            state = reply.request
            assert state.status in ("pending", "processing"), state.status
            if state.status == "processing" and state.progress >= percent:
                return
            await asyncio.sleep(0.05)


def _statuses(states: list[dsar_pb2.DsarRequest]) -> list[str]:
    return [status for status, _ in groupby(s.status for s in states)]


async def _check_single_export(stub, db: Database, tenant: str, done: dsar_pb2.DsarRequest):
    """The request ended with exactly one export: one stored attempt, one completion."""
    assert done.status == "completed", done.error
    assert [a for a, _ in await stored_attempts(db, tenant, done.id)] == [done.attempts]
    actions = await audit_actions(db, tenant, done.id)
    assert actions.count("dsar_export_completed") == 1
    document = await download(stub, tenant, done.id)
    assert len(document) == done.export_size_bytes
    assert assert_canonical(document)["counts"]["interactions"] == ROWS + 5


async def test_watch_sees_every_transition_in_order_including_another_process(
    stub, seeded, server_env, db, no_session_workers
):
    await add_interactions(db, seeded, "cust_00001", ROWS)
    request = await create(stub, seeded, "cust_00001")
    # Watched through the session server from the start; the job runs in another process.
    watcher = await _watch_in_background(stub, seeded, request.id)
    worker = await _start_process({**server_env, **_slow()})
    try:
        states = await watcher
    finally:
        worker.stop()
    versions = [s.version for s in states]
    assert versions == list(range(1, versions[-1] + 1))  # every version, in order
    assert _statuses(states) == ["pending", "processing", "completed"]
    progress = [s.progress for s in states if s.status == "processing"]
    assert progress == sorted(progress) and any(0 < p < 100 for p in progress)
    done = states[-1]
    assert done.progress == 100 and done.export_available
    await _check_single_export(stub, db, seeded, done)

    # A late watcher first gets the current state, and that is terminal.
    late = await watch_states(stub, seeded, request.id)
    assert [(s.status, s.version) for s in late] == [("completed", done.version)]
    # A reconnecting watcher resumes after the last version it saw.
    resumed = await watch_states(stub, seeded, request.id, after_version=2)
    assert [s.version for s in resumed] == versions[2:]
    assert [s.progress for s in resumed] == [s.progress for s in states[2:]]


async def test_a_worker_process_killed_mid_export_is_replaced_and_one_export_remains(
    stub, seeded, server_env, server_with_env, db, no_session_workers
):
    await add_interactions(db, seeded, "cust_00001", ROWS)
    request = await create(stub, seeded, "cust_00001")
    watcher = await _watch_in_background(stub, seeded, request.id)
    doomed = await _start_process({**server_env, **_slow()})
    try:
        await _until_progress(stub, seeded, request.id, 10)
        doomed.signal(signal.SIGKILL)
        await asyncio.to_thread(doomed.wait)
    finally:
        doomed.stop()
    # A fresh worker claims the job once the dead one's lease has run out.
    await server_with_env(**worker_env())
    states = await watcher
    done = states[-1]
    assert done.attempts == 2
    # The dead attempt's progress, then the new attempt starting over.
    first_run = [s.progress for s in states if s.attempts == 1 and s.status == "processing"]
    assert max(first_run) >= 10
    await _check_single_export(stub, db, seeded, done)


async def test_a_stopped_server_hands_its_job_back_at_once(
    stub, seeded, server_with_env, db, no_session_workers
):
    await add_interactions(db, seeded, "cust_00001", ROWS)
    request = await create(stub, seeded, "cust_00001")
    watcher = await _watch_in_background(stub, seeded, request.id)
    first = await server_with_env(
        **_slow(KAIREON_DSAR_LEASE_SECONDS="600", KAIREON_DSAR_HEARTBEAT_SECONDS="0.4")
    )
    await _until_progress(stub, seeded, request.id, 10)
    await first.stop(grace=1)
    # No waiting for a 10-minute lease: the job is pending again, attempt refunded.
    await server_with_env(**worker_env())
    states = await watcher
    assert _statuses(states) == ["pending", "processing", "pending", "processing", "completed"]
    handed_back = next(s for s in states[1:] if s.status == "pending")
    assert handed_back.attempts == 0 and handed_back.error == ""
    done = states[-1]
    assert done.attempts == 1
    await _check_single_export(stub, db, seeded, done)


async def test_a_transient_failure_is_retried_after_a_backoff(
    stub, seeded, server_with_env, db, no_session_workers
):
    await add_interactions(db, seeded, "cust_00001", ROWS)
    request = await create(stub, seeded, "cust_00001")
    watcher = await _watch_in_background(stub, seeded, request.id)
    await server_with_env(**_slow())
    await _until_progress(stub, seeded, request.id, 10)
    async with db.connection() as con:
        dropped = await con.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = 'kaireon-dsar-export' AND datname = current_database()"
            # The job's, in their transactions: not the idle ones kept for the next export.
            " AND state <> 'idle'"
        )
    assert dropped == 2  # the job's reader and writer
    states = await watcher
    retry = next(s for s in states[1:] if s.status == "pending")
    assert retry.attempts == 1 and retry.error.startswith("retrying: ")
    assert "Error" in retry.error  # an exception type, never a message
    done = states[-1]
    assert done.attempts == 2 and done.error == ""
    await _check_single_export(stub, db, seeded, done)


async def test_a_job_failing_every_attempt_is_failed_with_a_reason(
    stub, seeded, server_with_env, db, no_session_workers
):
    # A registered dynamic table that cannot be read: every attempt fails.
    view = f"ds_{seeded}_broken"
    async with db.owner_connection() as owner:  # the platform creates ds_* relations
        await owner.execute(
            f"CREATE FUNCTION {view}_boom() RETURNS int LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'cust_00001 has secret-pii'; END $$"
        )
        await owner.execute(
            f'CREATE VIEW "{view}" AS SELECT tenant_id, customer_id, {view}_boom() AS x '
            "FROM consent_record"
        )
    async with db.transaction(seeded) as con:
        await con.execute(
            "INSERT INTO schema_registry (tenant_id, schema_id, table_name, entity_type) "
            "VALUES ($1, 'broken', $2, 'customer')",
            seeded,
            view,
        )
    request = await create(stub, seeded, "cust_00001")
    watcher = await _watch_in_background(stub, seeded, request.id)
    await server_with_env(**worker_env(KAIREON_DSAR_MAX_ATTEMPTS="3"))
    states = await watcher
    assert _statuses(states) == [
        "pending",
        "processing",
        "pending",
        "processing",
        "pending",
        "processing",
        "failed",
    ]
    failed = states[-1]
    assert failed.attempts == 3
    assert failed.error == "gave up after 3 attempts: RaiseError (P0001)"
    assert "secret" not in " ".join(s.error for s in states)
    assert await stored_attempts(db, seeded, request.id) == []
    assert await audit_actions(db, seeded, request.id) == [
        "dsar_request_created",
        "dsar_export_failed",
    ]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await download(stub, seeded, request.id)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_concurrent_workers_run_each_job_exactly_once(
    stub, seeded, server_with_env, db, no_session_workers
):
    requests = [await create(stub, seeded, f"cust_0000{1 + i % 3}") for i in range(12)]
    for _ in range(2):
        await server_with_env(KAIREON_DSAR_WORKERS="3", KAIREON_DSAR_POLL_SECONDS="0.1")
    finals = await asyncio.gather(*(wait_done(stub, seeded, r.id) for r in requests))
    for done in finals:
        assert (done.status, done.attempts) == ("completed", 1)
        assert await stored_attempts(db, seeded, done.id) == [(1, 1)]
        assert (await audit_actions(db, seeded, done.id)).count("dsar_export_completed") == 1
    listing = await stub.ListDsarRequests(
        dsar_pb2.ListDsarRequestsRequest(status="completed"), metadata=metadata(seeded, "operator")
    )
    assert len(listing.requests) == 12


async def test_exports_run_at_once_up_to_the_bound_and_start_on_a_notification(
    stub, seeded, server_with_env, no_session_workers
):
    """One dispatcher per process: as many exports at once as are queued, never
    more than KAIREON_DSAR_WORKERS; a queued job starts on its NOTIFY (the
    fallback poll here is ten minutes away)."""
    from kaireon_server.dsar.service import DsarCapability

    app = await server_with_env(
        **worker_env(KAIREON_DSAR_WORKERS="3", KAIREON_DSAR_POLL_SECONDS="600")
    )
    workers = next(c for c in app.capabilities if isinstance(c, DsarCapability)).workers
    seen: list[int] = []

    async def sample() -> None:
        while True:
            seen.append(workers.busy)
            await asyncio.sleep(0.01)

    sampler = asyncio.create_task(sample())
    try:
        alone = await create(stub, seeded, "cust_00001")
        assert (await wait_done(stub, seeded, alone.id, timeout=30)).status == "completed"
        assert max(seen) == 1
        seen.clear()
        queued = [await create(stub, seeded, f"cust_0000{1 + i % 3}") for i in range(7)]
        finals = await asyncio.gather(*(wait_done(stub, seeded, r.id, timeout=60) for r in queued))
    finally:
        sampler.cancel()
    assert [(f.status, f.attempts) for f in finals] == [("completed", 1)] * 7
    assert max(seen) == 3
    # A slot is given back just after the export's final status is written.
    for _ in range(500):
        if workers.busy == 0:
            break
        await asyncio.sleep(0.01)
    assert workers.busy == 0


async def test_a_stale_attempt_can_neither_heartbeat_nor_complete(
    stub, tenant, db: Database, no_session_workers
):
    from kaireon_server.dsar import repository
    from kaireon_server.dsar.model import audit_row
    from kaireon_server.platform.audit_chain import PendingAudit

    request = await create(stub, tenant, "cust_1")
    async with db.connection() as con, con.transaction():
        first = await repository.claim_next(con, "worker-a", 30, 5, can_encrypt=False)
    assert first is not None and str(first["id"]) == request.id and first["attempts"] == 1
    stale = repository.Lease(tenant, first["id"], "worker-a", 1)
    async with db.transaction(tenant) as con:
        assert await repository.heartbeat(con, stale, 30)
        # Worker A stops renewing; its lease runs out.
        await con.execute(
            "UPDATE dsar_request SET lease_expires_at = now() - interval '1 second' "
            "WHERE tenant_id = $1 AND id = $2",
            tenant,
            first["id"],
        )
    async with db.connection() as con, con.transaction():
        second = await repository.claim_next(con, "worker-b", 30, 5, can_encrypt=False)
    assert second is not None and second["attempts"] == 2
    meta = {
        "chunks": 1,
        "size": 2,
        "rows": 0,
        "digest": "d",
        "signature": "unsigned",
        "signing_key_id": None,
        "key_version": None,
    }

    def completed(attempt: int) -> PendingAudit:
        row = audit_row("dsar_export_completed", first["id"], "cust_1", "t", {"attempt": attempt})
        return PendingAudit.of(tenant, [row])

    async with db.transaction(tenant) as con:
        assert not await repository.heartbeat(con, stale, 30)
        assert not await repository.set_progress(con, stale, 50)
        assert not await repository.complete(con, stale, meta, completed(1))
        assert await repository.complete(
            con, repository.Lease(tenant, first["id"], "worker-b", 2), meta, completed(2)
        )
    # Only the completion that took wrote its audit row.
    async with db.transaction(tenant, readonly=True) as con:
        attempts = await con.fetch(
            "SELECT changes->>'attempt' AS attempt FROM audit_log WHERE tenant_id = $1 "
            "AND action = 'dsar_export_completed'",
            tenant,
        )
    assert [r["attempt"] for r in attempts] == ["2"]
    states = await watch_states(stub, tenant, request.id)
    assert (states[-1].status, states[-1].attempts) == ("completed", 2)


async def test_the_notifier_reconnects_after_losing_its_connection(stub, seeded, db: Database):
    async def notifier_pids() -> set[int]:
        async with db.connection() as con:
            rows = await con.fetch(
                "SELECT pid FROM pg_stat_activity WHERE application_name = 'kaireon-listen' "
                "AND datname = current_database()"
            )
        return {r["pid"] for r in rows}

    before = await notifier_pids()
    assert before
    async with db.connection() as con:
        await con.execute(
            "SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) AS pid", list(before)
        )
    async with asyncio.timeout(20):
        while not (await notifier_pids()) - before:
            await asyncio.sleep(0.1)
    # Watchers and workers are served by the new connection.
    request = await create(stub, seeded, "cust_00001")
    done = await wait_done(stub, seeded, request.id, timeout=30)
    assert done.status == "completed"


async def test_a_job_whose_workers_keep_dying_is_failed_once_attempts_are_used_up(
    stub, tenant, db: Database, server_with_env, no_session_workers
):
    from kaireon_server.dsar import repository

    request = await create(stub, tenant, "cust_1")
    async with db.connection() as con, con.transaction():
        claimed = await repository.claim_next(con, "dead-worker", 0.1, 5, can_encrypt=False)
    assert claimed is not None and claimed["attempts"] == 1
    # The claimer died without a heartbeat; this deployment allows one attempt only.
    await server_with_env(**worker_env(KAIREON_DSAR_MAX_ATTEMPTS="1"))
    states = await watch_states(stub, tenant, request.id)
    failed = states[-1]
    assert (failed.status, failed.attempts) == ("failed", 1)
    assert failed.error == "worker_lost: no attempts left after 1"
    assert await audit_actions(db, tenant, request.id) == [
        "dsar_request_created",
        "dsar_export_failed",
    ]


async def test_export_connections_kept_for_reuse_hold_no_transaction_or_lock(
    stub, seeded, db: Database
):
    """An attempt's connections are kept without a reset (dsar/jobs.py): they
    must be idle, outside any transaction, with no advisory lock left."""
    for subject in ("cust_00001", "cust_00002"):
        request = await create(stub, seeded, subject)
        assert (await wait_done(stub, seeded, request.id)).status == "completed"
    async with db.connection() as con:
        for _ in range(50):  # the slot gives its connections back just after completing
            rows = await con.fetch(
                "SELECT a.state, (SELECT count(*) FROM pg_locks l"
                "  WHERE l.pid = a.pid AND l.locktype = 'advisory') AS locks"
                "  FROM pg_stat_activity a WHERE a.application_name = 'kaireon-dsar-export'"
                "   AND a.datname = current_database()"
            )
            if rows and all(r["state"] == "idle" for r in rows):
                break
            await asyncio.sleep(0.1)
    assert rows
    assert {(r["state"], r["locks"]) for r in rows} == {("idle", 0)}


async def test_a_slot_that_frees_up_claims_only_when_the_queue_may_hold_work(
    stub, seeded, app, monkeypatch: pytest.MonkeyPatch
):
    """Each export costs the claim that takes it and one that finds the queue
    empty; an export's end does not add a third that finds nothing (plus one
    claim per poll interval)."""
    import math
    import time

    from kaireon_server.dsar import worker as worker_module
    from kaireon_server.dsar.service import DsarCapability

    claims = 0
    claim = worker_module.Worker.claim

    async def counted(self: worker_module.Worker) -> object:
        nonlocal claims
        claims += 1
        return await claim(self)

    monkeypatch.setattr(worker_module.Worker, "claim", counted)
    began = time.monotonic()
    exports = 8
    for i in range(exports):
        request = await create(stub, seeded, f"cust_0000{1 + i % 3}")
        assert (await wait_done(stub, seeded, request.id)).status == "completed"
    capability = next(c for c in app.capabilities if isinstance(c, DsarCapability))
    polls = math.ceil((time.monotonic() - began) / capability.settings.poll_seconds) + 1
    assert claims <= 2 * exports + polls, (claims, polls)


async def test_a_dead_workers_job_is_failed_while_every_slot_is_busy(
    stub, seeded, db: Database, server_with_env, no_session_workers
):
    """The reap runs at every poll, busy or idle: a job whose workers all died is
    failed while the only slot exports something else (it used to wait for a
    slot to find the queue empty)."""
    from kaireon_server.dsar import repository

    await add_interactions(db, seeded, "cust_00001", 2000)  # minutes under worker_env
    dead = await create(stub, seeded, "cust_00002")
    async with db.connection() as con, con.transaction():
        claimed = await repository.claim_next(con, "dead-worker", 0.1, 5, can_encrypt=False)
    assert claimed is not None and str(claimed["id"]) == dead.id
    slow = await create(stub, seeded, "cust_00001")
    await server_with_env(**worker_env(KAIREON_DSAR_MAX_ATTEMPTS="1"))
    failed = (await watch_states(stub, seeded, dead.id, timeout=20))[-1]
    assert (failed.status, failed.error) == ("failed", "worker_lost: no attempts left after 1")
    busy = await stub.GetDsarRequest(
        dsar_pb2.GetDsarRequestRequest(id=slow.id), metadata=metadata(seeded, "operator")
    )
    assert busy.request.status == "processing"
