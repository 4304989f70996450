"""SQL for runs, node status and the event log. Every statement filters by tenant_id.

Writes by an executor are fenced by the run's attempt number: an executor that
lost its lock (and whose run was retried elsewhere) cannot overwrite the newer
attempt's state.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from kaireon_server.flow.hooks import NodeResult, NodeState, RunState
from kaireon_server.platform.audit_chain import PendingAudit, pending_audit_insert


@dataclass(frozen=True)
class NodeView:
    node_id: str
    node_type: str
    state: NodeState
    attempts: int = 0
    error: str = ""
    cache_key: str = ""
    output_digest: str = ""
    started_at: datetime | None = None
    ended_at: datetime | None = None


@dataclass(frozen=True)
class RunView:
    run_id: str
    name: str
    definition: Mapping[str, Any]
    definition_digest: str
    state: RunState
    attempt: int
    error: str
    cancel_requested: bool
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    nodes: tuple[NodeView, ...] = field(default=())


@dataclass(frozen=True)
class EventRow:
    seq: int
    attempt: int
    type: str
    node_id: str
    error: str
    status: Mapping[str, Any]
    created_at: datetime


_RUN_COLUMNS = (
    "run_id, name, definition, definition_digest, state, attempt, error, cancel_requested, "
    "created_at, started_at, ended_at"
)


def _run(rec: Any, nodes: Iterable[NodeView] = ()) -> RunView:
    return RunView(
        run_id=rec["run_id"],
        name=rec["name"],
        definition=rec.get("definition") or {},
        definition_digest=rec["definition_digest"],
        state=RunState(rec["state"]),
        attempt=rec["attempt"],
        error=rec["error"],
        cancel_requested=rec["cancel_requested"],
        created_at=rec["created_at"],
        started_at=rec["started_at"],
        ended_at=rec["ended_at"],
        nodes=tuple(nodes),
    )


def node_view(result: NodeResult) -> NodeView:
    return NodeView(
        result.node_id,
        result.node_type,
        result.state,
        result.attempts,
        result.error,
        result.cache_key,
        result.output_digest,
        result.started_at,
        result.ended_at,
    )


async def checkpoint_output(
    con: asyncpg.Connection, tenant_id: str, run_id: str, node_id: str
) -> asyncpg.Record | None:
    """The stored output of one node (output, output_digest, created_at), if any."""
    return await con.fetchrow(
        "SELECT output, output_digest, created_at FROM flow_run_checkpoint "
        "WHERE tenant_id = $1 AND run_id = $2 AND node_id = $3",
        tenant_id,
        run_id,
        node_id,
    )


async def get_run(
    con: asyncpg.Connection, tenant_id: str, run_id: str, *, for_update: bool = False
) -> RunView | None:
    lock = " FOR UPDATE" if for_update else ""
    rec = await con.fetchrow(
        f"SELECT {_RUN_COLUMNS} FROM flow_run WHERE tenant_id = $1 AND run_id = $2{lock}",  # noqa: S608 - constant SQL
        tenant_id,
        run_id,
    )
    if rec is None:
        return None
    rows = await con.fetch(
        "SELECT node_id, node_type, state, attempts, error, cache_key, output_digest, "
        "started_at, ended_at FROM flow_run_node WHERE tenant_id = $1 AND run_id = $2 "
        "ORDER BY position",
        tenant_id,
        run_id,
    )
    nodes = [
        NodeView(
            r["node_id"],
            r["node_type"],
            NodeState(r["state"]),
            r["attempts"],
            r["error"],
            r["cache_key"],
            r["output_digest"],
            r["started_at"],
            r["ended_at"],
        )
        for r in rows
    ]
    return _run(rec, nodes)


def list_runs_query(
    tenant_id: str, *, limit: int, after: tuple[datetime, str] | None, state: RunState | None
) -> tuple[str, list[Any]]:
    """One statement per filter combination, so each filter is an index
    condition in any plan (see dsar/repository.list_requests_query)."""
    args: list[Any] = [tenant_id]
    where = ["tenant_id = $1"]
    if state is not None:
        args.append(state.value)
        where.append(f"state = ${len(args)}")
    if after is not None:
        args.extend(after)
        where.append(f"(created_at, run_id) < (${len(args) - 1}, ${len(args)})")
    args.append(limit)
    sql = (
        "SELECT run_id, name, definition_digest, state, attempt, error, cancel_requested, "  # noqa: S608 - constant SQL
        f"created_at, started_at, ended_at FROM flow_run WHERE {' AND '.join(where)} "
        f"ORDER BY created_at DESC, run_id DESC LIMIT ${len(args)}"
    )
    return sql, args


async def list_runs(
    con: asyncpg.Connection,
    tenant_id: str,
    *,
    limit: int,
    after: tuple[datetime, str] | None,
    state: RunState | None,
) -> list[RunView]:
    sql, args = list_runs_query(tenant_id, limit=limit, after=after, state=state)
    rows = await con.fetch(sql, *args)
    return [_run(r) for r in rows]


# StartRun's statement (insert_run): the audit rows' arrays are $9.. .
_INSERT_RUN = f"""
    WITH run AS (
        INSERT INTO flow_run (tenant_id, run_id, name, definition, definition_digest,
                              state, attempt, started_at, created_at)
        VALUES ($1, $2, $3, $4, $5, 'running', 1, $6, $6)
        ON CONFLICT (tenant_id, run_id) DO NOTHING
        RETURNING run_id
    ), node AS (
        INSERT INTO flow_run_node (tenant_id, run_id, node_id, position, node_type, state)
        SELECT $1, run.run_id, n.node_id, n.position - 1, n.node_type, 'pending'
          FROM run, unnest($7::text[], $8::text[])
                    WITH ORDINALITY AS n(node_id, node_type, position)
    ), stale AS (
        DELETE FROM flow_run_checkpoint c USING run
         WHERE c.tenant_id = $1 AND c.run_id = run.run_id
    ), audit AS (
        {pending_audit_insert(tenant="$1", first=9, when="EXISTS (SELECT FROM run)")}
    )
    SELECT count(*) FROM run
    """  # noqa: S608 - constant SQL


async def insert_run(
    con: asyncpg.Connection,
    tenant_id: str,
    run_id: str,
    *,
    name: str,
    definition: Mapping[str, Any],
    digest: str,
    nodes: Sequence[tuple[str, str]],
    started_at: datetime,
    audit: PendingAudit,
) -> RunView | None:
    """Insert a new run, its pending nodes and `audit` in one statement, its own
    transaction (StartRun's hot path: no BEGIN, no read before, none after; the
    audit rows are chained at its commit); None, and nothing written, when the
    run id exists. A new run starts with no checkpoints: any left under its id
    (a run row deleted, its checkpoints not yet purged) are deleted with the
    insert, so the executor need not read them. The view is what get_run would
    read back: the columns' defaults, the given values."""
    created = await con.fetchval(
        _INSERT_RUN,
        tenant_id,
        run_id,
        name,
        dict(definition),
        digest,
        started_at,
        [nid for nid, _ in nodes],
        [ntype for _, ntype in nodes],
        *audit.columns,
    )
    if not created:
        return None
    audit.written()
    return RunView(
        run_id=run_id,
        name=name,
        definition=dict(definition),
        definition_digest=digest,
        state=RunState.RUNNING,
        attempt=1,
        error="",
        cancel_requested=False,
        created_at=started_at,
        started_at=started_at,
        ended_at=None,
        nodes=tuple(NodeView(nid, ntype, NodeState.PENDING) for nid, ntype in nodes),
    )


async def _insert_nodes(
    con: asyncpg.Connection, tenant_id: str, run_id: str, nodes: Sequence[tuple[str, str]]
) -> None:
    # One statement whatever the node count (COPY FROM is refused under row-level security).
    await con.execute(
        "INSERT INTO flow_run_node (tenant_id, run_id, node_id, position, node_type, state) "
        "SELECT $1, $2, n.node_id, n.position - 1, n.node_type, 'pending' "
        "FROM unnest($3::text[], $4::text[]) WITH ORDINALITY AS n(node_id, node_type, position)",
        tenant_id,
        run_id,
        [nid for nid, _ in nodes],
        [ntype for _, ntype in nodes],
    )


async def begin_attempt(
    con: asyncpg.Connection,
    tenant_id: str,
    run_id: str,
    *,
    attempt: int,
    name: str,
    definition: Mapping[str, Any],
    digest: str,
    nodes: Sequence[tuple[str, str]],
    started_at: datetime,
) -> None:
    """Reset a run for a new attempt: running again, every node pending."""
    await con.execute(
        "UPDATE flow_run SET state = 'running', attempt = $3, name = $4, definition = $5, "
        "definition_digest = $6, error = '', cancel_requested = false, started_at = $7, "
        "ended_at = NULL WHERE tenant_id = $1 AND run_id = $2",
        tenant_id,
        run_id,
        attempt,
        name,
        dict(definition),
        digest,
        started_at,
    )
    await con.execute(
        "DELETE FROM flow_run_node WHERE tenant_id = $1 AND run_id = $2", tenant_id, run_id
    )
    await _insert_nodes(con, tenant_id, run_id, nodes)


async def next_seq(con: asyncpg.Connection, tenant_id: str, run_id: str) -> int:
    value = await con.fetchval(
        "SELECT coalesce(max(seq), 0) + 1 FROM flow_run_event WHERE tenant_id = $1 AND run_id = $2",
        tenant_id,
        run_id,
    )
    return int(value)


def status_json(result: NodeResult | NodeView) -> dict[str, Any]:
    return {
        "state": result.state.value,
        "type": result.node_type,
        "attempts": result.attempts,
        "error": result.error,
        "cacheKey": result.cache_key,
        "outputDigest": result.output_digest,
        "startTime": result.started_at.isoformat() if result.started_at else None,
        "endTime": result.ended_at.isoformat() if result.ended_at else None,
    }


# The EXISTS fence keeps a stale executor out.
_UPDATE_NODE = (
    "UPDATE flow_run_node SET state = $5, attempts = $6, error = $7, cache_key = $8, "
    "output_digest = $9, started_at = $10, ended_at = $11 "
    "WHERE tenant_id = $1 AND run_id = $2 AND node_id = $4 AND EXISTS (SELECT 1 FROM flow_run r "
    "WHERE r.tenant_id = $1 AND r.run_id = $2 AND r.attempt = $3)"
)


async def update_nodes(
    con: asyncpg.Connection, tenant_id: str, run_id: str, attempt: int, nodes: Iterable[NodeResult]
) -> None:
    nodes = list(nodes)
    if not nodes:
        return
    await con.executemany(
        _UPDATE_NODE,
        [
            (
                tenant_id,
                run_id,
                attempt,
                n.node_id,
                n.state.value,
                n.attempts,
                n.error,
                n.cache_key,
                n.output_digest,
                n.started_at,
                n.ended_at,
            )
            for n in nodes
        ],
    )


async def insert_events(
    con: asyncpg.Connection,
    tenant_id: str,
    run_id: str,
    events: Sequence[tuple[int, int, str, str, str, Mapping[str, Any], datetime]],
) -> None:
    """Events as (seq, attempt, type, node_id, error, status, at)."""
    await con.executemany(
        "INSERT INTO flow_run_event (tenant_id, run_id, seq, attempt, type, node_id, error, "
        "status, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        [(tenant_id, run_id, *e) for e in events],
    )


async def write_batch(
    con: asyncpg.Connection,
    tenant_id: str,
    run_id: str,
    attempt: int,
    events: Sequence[Mapping[str, Any]],
    *,
    notification: tuple[str, str],
) -> None:
    """A recorder flush: events (and their nodes' status, behind the attempt fence),
    then NOTIFY at its commit; one statement that sets the tenant itself
    (migration 0220), for `Database.single_statements()`. `events`: dicts of
    seq, type, node_id, error, status, at."""
    await con.execute(
        "SELECT kaireon_flow_write_batch($1, $2, $3, $4, $5, $6)",
        tenant_id,
        run_id,
        attempt,
        list(events),
        *notification,
    )


async def finish_run_alone(
    con: asyncpg.Connection,
    tenant_id: str,
    run_id: str,
    *,
    attempt: int,
    state: RunState,
    error: str,
    ended_at: datetime,
    seq: int,
    events: Sequence[Mapping[str, Any]],
    notification: tuple[str, str],
    release_lock: bool = False,
    timeout: float | None = None,
) -> None:
    """The end of `attempt` with its run_finished event `seq` and its NOTIFY, in one
    statement that sets the tenant itself (migrations 0220, 0236), for
    `Database.single_statements()`; nothing when the run is past it (fenced).
    `events`: the recorder's last, unflushed (write_batch's shape), written first
    in the same statement.

    `release_lock`: on the run lock's connection, the same statement then releases
    the session's advisory locks and clears its tenant (what the connection's
    reset would do, a round trip more). The lock goes before the end commits:
    whoever takes it next meets the run's row locked by the end until the commit,
    then finished (every lock taker reads the run FOR UPDATE or updates it fenced
    on its state)."""
    end = (tenant_id, run_id, attempt, state.value, error, ended_at, seq, *notification)
    if events:
        # The events go between the attempt and the state (the function's order).
        call = "kaireon_flow_end_run($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        args: tuple[Any, ...] = (*end[:3], list(events), *end[3:])
    else:
        call = "kaireon_flow_finish_run($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        args = end
    if release_lock:
        # MATERIALIZED: the end is made before the projection unlocks.
        sql = (
            f"WITH ended AS MATERIALIZED (SELECT {call} AS finished) "  # noqa: S608 - constant
            "SELECT pg_advisory_unlock_all(), set_config('kaireon.tenant_id', '', false) "
            "FROM ended"
        )
    else:
        sql = f"SELECT {call}"
    await con.execute(sql, *args, timeout=timeout)


# The end of an attempt (kaireon_flow_finish_run's statement, migration 0241): the
# row found by its key alone, never through an index on state, whose 'running'
# entries include every run ended since the last vacuum.
FINISH_RUN_SQL = (
    "UPDATE flow_run SET state = $4, error = $5, ended_at = $6 "
    "WHERE tenant_id = $1 AND run_id = $2 AND attempt = $3 "
    "AND state IS NOT DISTINCT FROM 'running'"
)


async def finish_run(
    con: asyncpg.Connection,
    tenant_id: str,
    run_id: str,
    *,
    attempt: int,
    state: RunState,
    error: str,
    ended_at: datetime,
) -> bool:
    """Record the end of `attempt`; False when the run is already past it (fenced)."""
    status = await con.execute(
        FINISH_RUN_SQL,
        tenant_id,
        run_id,
        attempt,
        state.value,
        error,
        ended_at,
    )
    return bool(status.endswith(" 1"))


async def cancel_unfinished_nodes(
    con: asyncpg.Connection, tenant_id: str, run_id: str, ended_at: datetime
) -> None:
    await con.execute(
        "UPDATE flow_run_node SET state = 'cancelled', ended_at = coalesce(ended_at, $3) "
        "WHERE tenant_id = $1 AND run_id = $2 AND state IN ('pending', 'running')",
        tenant_id,
        run_id,
        ended_at,
    )


async def request_cancel(con: asyncpg.Connection, tenant_id: str, run_id: str) -> None:
    await con.execute(
        "UPDATE flow_run SET cancel_requested = true WHERE tenant_id = $1 AND run_id = $2",
        tenant_id,
        run_id,
    )


async def clear_cache_keys(con: asyncpg.Connection, tenant_id: str, run_id: str) -> None:
    await con.execute(
        "UPDATE flow_run_node SET cache_key = '' WHERE tenant_id = $1 AND run_id = $2",
        tenant_id,
        run_id,
    )


# A run's events after a position: served by the primary key (tenant_id, run_id, seq).
EVENTS_AFTER_SQL = (
    "SELECT seq, attempt, type, node_id, error, status, created_at FROM flow_run_event "
    "WHERE tenant_id = $1 AND run_id = $2 AND seq > $3 ORDER BY seq LIMIT $4"
)


async def events_after(
    con: asyncpg.Connection, tenant_id: str, run_id: str, seq: int, limit: int
) -> list[EventRow]:
    rows = await con.fetch(EVENTS_AFTER_SQL, tenant_id, run_id, seq, limit)
    return [_event(r) for r in rows]


async def last_event(con: asyncpg.Connection, tenant_id: str, run_id: str) -> EventRow | None:
    """The run's latest event (a finished run's: its run_finished), by the primary key."""
    row = await con.fetchrow(
        "SELECT seq, attempt, type, node_id, error, status, created_at FROM flow_run_event "
        "WHERE tenant_id = $1 AND run_id = $2 ORDER BY seq DESC LIMIT 1",
        tenant_id,
        run_id,
    )
    return _event(row) if row is not None else None


def _event(r: asyncpg.Record) -> EventRow:
    return EventRow(
        r["seq"], r["attempt"], r["type"], r["node_id"], r["error"], r["status"], r["created_at"]
    )


async def running_runs(con: asyncpg.Connection) -> list[tuple[str, str, int]]:
    """Running runs of every tenant: for the orphan sweep, a maintenance task."""
    # Across tenants: through migration 0100's function (row-level security).
    rows = await con.fetch("SELECT tenant_id, run_id, attempt FROM kaireon_flow_running_runs(1000)")
    return [(r["tenant_id"], r["run_id"], r["attempt"]) for r in rows]


async def purge_checkpoints(con: asyncpg.Connection, older_than_hours: float) -> int:
    """Delete checkpoints of runs finished more than `older_than_hours` ago, every
    tenant (a maintenance task). Outputs may hold personal data: they are kept
    only as long as a retry is plausible."""
    purged: int = await con.fetchval(
        "SELECT kaireon_flow_purge_checkpoints($1)", older_than_hours * 3600
    )
    return purged
