"""The run recorder's batched writes (event log, node status, NOTIFY in one
statement), the attempt fence, and what finalize is left to rewrite; the
tenant of the run lock's session.

Rows are read back over the owner DSN (`database_url`), not the server's pool.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from kaireon_server.flow import repository
from kaireon_server.flow.hooks import EventType, NodeEvent, NodeResult, NodeState, RunState
from kaireon_server.flow.locks import RunLock
from kaireon_server.flow.notifier import CHANNEL
from kaireon_server.flow.recorder import RunRecorder
from kaireon_server.platform.audit_chain import PendingAudit
from kaireon_server.platform.db import Database

T0 = datetime(2026, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)


async def new_run(db: Database, tenant: str, run_id: str, nodes: int = 3) -> None:
    async with db.transaction(tenant) as con:
        await repository.insert_run(
            con,
            tenant,
            run_id,
            name="rec",
            definition={},
            digest="",
            nodes=[(f"n{i}", "test.step") for i in range(nodes)],
            started_at=T0,
            audit=PendingAudit.of(tenant, []),
        )


def event(kind: EventType, status: NodeResult, tenant: str, run_id: str) -> NodeEvent:
    at = status.ended_at or status.started_at or T0
    return NodeEvent(
        kind, tenant, run_id, 1, status.node_id, status.node_type, at, status, error=status.error
    )


def running(node_id: str, offset: int = 0) -> NodeResult:
    return NodeResult(
        node_id,
        "test.step",
        NodeState.RUNNING,
        1,
        started_at=T0 + timedelta(seconds=offset),
    )


def completed(node_id: str, offset: int = 0) -> NodeResult:
    return NodeResult(
        node_id,
        "test.step",
        NodeState.COMPLETED,
        1,
        cache_key="k" * 64,
        output_digest="d" * 64,
        started_at=T0 + timedelta(seconds=offset),
        ended_at=T0 + timedelta(seconds=offset, milliseconds=5),
    )


@pytest.fixture
async def owner(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    con = await asyncpg.connect(database_url)
    yield con
    await con.close()


@pytest.fixture
async def lock(db: Database, tenant: str) -> AsyncIterator[RunLock]:
    taken = await RunLock.try_acquire(db, tenant, "rec-run")
    assert taken is not None
    yield taken
    await taken.release()


async def events_of(owner: asyncpg.Connection, tenant: str, run_id: str) -> list[Any]:
    return list(
        await owner.fetch(
            "SELECT seq, attempt, type, node_id, error, status::text AS status, created_at "
            "FROM flow_run_event WHERE tenant_id = $1 AND run_id = $2 ORDER BY seq",
            tenant,
            run_id,
        )
    )


async def nodes_of(owner: asyncpg.Connection, tenant: str, run_id: str) -> dict[str, Any]:
    rows = await owner.fetch(
        "SELECT node_id, state, attempts, error, cache_key, output_digest, started_at, ended_at "
        "FROM flow_run_node WHERE tenant_id = $1 AND run_id = $2",
        tenant,
        run_id,
    )
    return {r["node_id"]: r for r in rows}


async def test_lock_connection_carries_the_tenant(lock: RunLock, tenant: str) -> None:
    assert await lock.con.fetchval("SELECT current_setting('kaireon.tenant_id')") == tenant


async def test_one_batch_writes_events_status_and_notifies(
    db: Database, owner: asyncpg.Connection, tenant: str
) -> None:
    await new_run(db, tenant, "rec-run")
    heard: asyncio.Queue[str] = asyncio.Queue()
    await owner.add_listener(CHANNEL, lambda *args: heard.put_nowait(args[-1]))
    recorder = RunRecorder(db, tenant, "rec-run", 1, 7)
    await recorder.on_node_start(event(EventType.NODE_STARTED, running("n0"), tenant, "rec-run"))
    done = completed("n0")
    await recorder.on_node_complete(event(EventType.NODE_COMPLETED, done, tenant, "rec-run"))
    await recorder.on_node_start(event(EventType.NODE_STARTED, running("n1", 1), tenant, "rec-run"))
    await recorder.close()
    # Stopped before its first flush: all three are the tail, written here on their own.
    assert [e["seq"] for e in recorder.tail_events()] == [7, 8, 9]
    await recorder.write_tail()

    rows = await events_of(owner, tenant, "rec-run")
    assert [(r["seq"], r["type"], r["node_id"]) for r in rows] == [
        (7, "node_started", "n0"),
        (8, "node_completed", "n0"),
        (9, "node_started", "n1"),
    ]
    assert all(r["attempt"] == 1 and r["error"] == "" for r in rows)
    assert json.loads(rows[1]["status"]) == repository.status_json(done)
    assert rows[1]["created_at"] == done.ended_at
    nodes = await nodes_of(owner, tenant, "rec-run")
    # Each node holds the status of its last event in the batch.
    assert nodes["n0"]["state"] == "completed" and nodes["n0"]["cache_key"] == "k" * 64
    assert (nodes["n0"]["started_at"], nodes["n0"]["ended_at"]) == (done.started_at, done.ended_at)
    assert nodes["n1"]["state"] == "running" and nodes["n1"]["ended_at"] is None
    assert nodes["n2"]["state"] == "pending"
    message = json.loads(await asyncio.wait_for(heard.get(), 5))
    assert message == {"t": tenant, "r": "rec-run", "k": "event"}
    assert recorder.next_seq == 10
    # What the flushes wrote is known: finalize rewrites only what differs.
    never_started = NodeResult("n2", "test.step", NodeState.CANCELLED)
    assert recorder.unwritten([done, running("n1", 1), never_started], with_tail=False) == [
        never_started
    ]


async def test_stale_attempt_cannot_overwrite_node_status(
    db: Database, owner: asyncpg.Connection, tenant: str
) -> None:
    await new_run(db, tenant, "rec-run")
    # The run moved on to attempt 2; an executor of attempt 1 flushes late.
    await owner.execute(
        "UPDATE flow_run SET attempt = 2 WHERE tenant_id = $1 AND run_id = $2", tenant, "rec-run"
    )
    stale = RunRecorder(db, tenant, "rec-run", 1, 1)
    await stale.on_node_complete(
        event(EventType.NODE_COMPLETED, completed("n0"), tenant, "rec-run")
    )
    await stale.close()
    await stale.write_tail()
    assert (await nodes_of(owner, tenant, "rec-run"))["n0"]["state"] == "pending"


async def test_nothing_written_leaves_every_status_to_finalize(
    db: Database, owner: asyncpg.Connection, tenant: str
) -> None:
    # No flow_run row: the event log's foreign key refuses the batch; the run goes on.
    recorder = RunRecorder(db, tenant, "no-run", 1, 1)
    done = completed("n0")
    await recorder.on_node_complete(event(EventType.NODE_COMPLETED, done, tenant, "no-run"))
    await recorder.close()
    await recorder.write_tail()
    assert await events_of(owner, tenant, "no-run") == []
    assert recorder.unwritten([done], with_tail=False) == [done]


async def test_the_tail_and_the_runs_end_are_one_statement_that_keeps_the_commit_durable(
    db: Database, owner: asyncpg.Connection, tenant: str
) -> None:
    await new_run(db, tenant, "rec-run", nodes=2)
    mine = json.dumps({"t": tenant, "end": True})
    heard: asyncio.Queue[str] = asyncio.Queue()
    # Other tests' notifications travel on the channel too: only this one counts.
    await owner.add_listener(
        CHANNEL, lambda *args: heard.put_nowait(args[-1]) if args[-1] == mine else None
    )
    recorder = RunRecorder(db, tenant, "rec-run", 1, 1)
    first, second = completed("n0"), completed("n1", 1)
    await recorder.on_node_complete(event(EventType.NODE_COMPLETED, first, tenant, "rec-run"))
    await recorder.on_node_complete(event(EventType.NODE_COMPLETED, second, tenant, "rec-run"))
    await recorder.close()
    assert await events_of(owner, tenant, "rec-run") == []  # the tail is not flushed
    # The tail holds every node's final status: nothing is left for a second write.
    assert recorder.unwritten([first, second], with_tail=True) == []
    assert recorder.unwritten([first, second], with_tail=False) == [first, second]
    ended = T0 + timedelta(seconds=2)
    async with db.single_statements() as con:
        # Inside a transaction to look at the setting after the call; the server's
        # own end is a single statement, its own transaction.
        async with con.transaction():
            before = await con.fetchval("SHOW synchronous_commit")
            await repository.finish_run_alone(
                con,
                tenant,
                "rec-run",
                attempt=1,
                state=RunState.SUCCEEDED,
                error="",
                ended_at=ended,
                seq=recorder.next_seq,
                events=recorder.tail_events(),
                notification=(CHANNEL, mine),
            )
            # The batch's commit mode (off) does not reach the run's end.
            assert await con.fetchval("SHOW synchronous_commit") == before
    rows = await events_of(owner, tenant, "rec-run")
    assert [(r["seq"], r["type"], r["node_id"]) for r in rows] == [
        (1, "node_completed", "n0"),
        (2, "node_completed", "n1"),
        (3, "run_finished", ""),
    ]
    nodes = await nodes_of(owner, tenant, "rec-run")
    assert {n: r["state"] for n, r in nodes.items()} == {"n0": "completed", "n1": "completed"}
    run = await owner.fetchrow(
        "SELECT state, ended_at FROM flow_run WHERE tenant_id = $1 AND run_id = $2",
        tenant,
        "rec-run",
    )
    assert (run["state"], run["ended_at"]) == ("succeeded", ended)
    # The batch's and the end's identical notifications arrive as one.
    assert await asyncio.wait_for(heard.get(), 5) == mine
    await asyncio.sleep(0.2)
    assert heard.empty()
