"""The flow runner in-process, per checkpoint store: time and CPU per no-op node.

Shapes: a chain of N nodes (no concurrency) and a fan-out (one root, N-1 leaves,
the default concurrency of 8); every node is `bench.noop`, so the time is the
runner's own work. The stores (perf/README.md, step 7): a floor (the checkpoint
statement alone, back to back: the other rows' "p50 x" is their ratio to it),
in memory, PostgreSQL, PostgreSQL + the run recorder (the service's path),
synchronous commit, and a retry (every node skipped from its checkpoint); then
DBOS Transact beside them (harness/dbos_peer.py). p50 is wall ms per node, the
note CPU ms per node of this process and of PostgreSQL (the CPU moves much less
than the wall time on a shared machine). Goal: <= 2 ms per node.
"""

from __future__ import annotations

import contextlib
import secrets
import statistics
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import UTC, datetime
from functools import partial
from typing import Any

import asyncpg

from harness import dbos_peer
from harness.report import Row
from harness.run import Context
from kaireon_server.flow import (
    FlowRunner,
    InMemoryCheckpointStore,
    NodeRegistry,
    NodeServices,
    PostgresCheckpointStore,
    RunState,
    definition_from_json,
    repository,
    validate,
)
from kaireon_server.flow.locks import dedicated_connection
from kaireon_server.flow.nodes.base import Config, NodeContext, NodeSetup, NodeType
from kaireon_server.flow.recorder import RunRecorder
from kaireon_server.flow.stores import CHECKPOINT_UPSERT, CheckpointStore, SharedConnection
from kaireon_server.flow.validation import Plan
from kaireon_server.platform.audit_chain import PendingAudit
from kaireon_server.platform.db import Database

GOAL_MS = 2.0


class Noop(NodeType[int]):
    name = "bench.noop"

    def parse_config(self, config: Mapping[str, Any], setup: NodeSetup) -> int:
        return int(Config(config, {"n"}).integer("n"))

    async def run(self, ctx: NodeContext, config: int, inputs: Mapping[str, Any]) -> Any:
        return {"n": config}


def _node(i: int, depends: list[str]) -> dict[str, Any]:
    return {"id": f"n{i}", "type": "bench.noop", "config": {"n": i}, "dependsOn": depends}


SHAPES: dict[str, Callable[[int], list[dict[str, Any]]]] = {
    "chain": lambda n: [_node(i, [f"n{i - 1}"] if i else []) for i in range(n)],
    "fan-out": lambda n: [_node(0, []), *(_node(i, ["n0"]) for i in range(1, n))],
}


@contextlib.asynccontextmanager
async def _connection(db: Database, tenant: str) -> AsyncIterator[asyncpg.Connection]:
    """Like a run's lock connection: outside the pool, tenant set for the session."""
    con = await dedicated_connection(db)
    try:
        await con.execute("SELECT set_config('kaireon.tenant_id', $1, false)", tenant)
        yield con
    finally:
        await con.close()


async def _one(
    ctx: Context, plan: Plan, store: CheckpointStore | None, recorder: bool, run_id: str
) -> None:
    """One run (or, without a store, the floor); timed by the caller."""
    db, tenant = ctx.db, ctx.tenant
    if store is None:
        async with _connection(db, tenant) as con:
            for i in range(len(plan.nodes)):
                await con.execute(
                    CHECKPOINT_UPSERT, tenant, run_id, f"n{i}", "k" * 64, "d" * 64, {"n": i}, "off"
                )
        return
    hooks: list[RunRecorder] = []
    async with contextlib.AsyncExitStack() as stack:
        if recorder:
            own = await stack.enter_async_context(_connection(db, tenant))
            store = PostgresCheckpointStore(db, connection=SharedConnection(own))
            async with db.transaction(tenant) as con:
                await repository.insert_run(
                    con,
                    tenant,
                    run_id,
                    name="bench",
                    definition={},
                    digest="",
                    nodes=[(node.id, node.spec.type) for node in plan.nodes.values()],
                    started_at=datetime.now(UTC),
                    audit=PendingAudit.of(tenant, []),
                )
            hooks.append(RunRecorder(db, tenant, run_id, 1, 1))
        result = await FlowRunner(store, hooks=hooks, services=NodeServices(db=db)).run(
            plan, tenant_id=tenant, run_id=run_id
        )
        for hook in hooks:
            await hook.close()
            await hook.write_tail()  # the service writes it with the run's end
    if result.state is not RunState.SUCCEEDED:
        raise RuntimeError(f"benchmark run failed: {result.error}")


def _variant(
    ctx: Context, plan: Plan, make: Callable[[], CheckpointStore] | None, label: str
) -> dbos_peer.Rounds:
    """Each round a run of its own (after, for a retry, the run it retries), on the
    run's event loop."""

    async def rounds() -> dbos_peer.Rounds:
        out = dbos_peer.Rounds(next(iter(ctx.pg_roots()), None))
        for _ in range(ctx.profile.runner_rounds):
            run_id = f"bench-{secrets.token_hex(4)}"
            store = make() if make else None
            if label.endswith("(retry)"):
                await _one(ctx, plan, store, False, run_id)
            with out.timed():
                await _one(ctx, plan, store, label.endswith("+recorder"), run_id)
        return out

    return ctx.on_loop(rounds())


def _measured(row: Row, n: int, rounds: Callable[[], dbos_peer.Rounds], goal: bool) -> Row:
    done = rounds()
    walls, cpus, pgs = done.walls, done.cpus, done.pgs
    wall = statistics.median(walls)
    row.rps, row.p50, row.p99 = n / wall, wall * 1000 / n, max(walls) * 1000 / n
    row.errors = 0
    cpu_ms = statistics.median(cpus) * 1000 / n
    pg_ms = statistics.median(pgs) * 1000 / n if len(pgs) == len(walls) else None
    row.gen_cpu = 100.0 * statistics.median(cpus) / wall
    row.extra.update(seconds=walls, cpu_ms_per_node=cpu_ms, pg_ms_per_node=pg_ms)
    row.note = f"{row.p50:.3f} ms/node, CPU {cpu_ms:.3f} ms/node" + (
        f", PostgreSQL {pg_ms:.3f} ms/node" if pg_ms is not None else ""
    )
    if goal:
        row.note += f"; goal <= {GOAL_MS:g} ms/node {'met' if row.p50 <= GOAL_MS else 'MISSED'}"
    return row


async def run(ctx: Context) -> list[Row]:
    n, runs = ctx.profile.runner_nodes, ctx.profile.runner_rounds
    postgres = partial(PostgresCheckpointStore, ctx.db)
    # The stores by label (floor: none, the checkpoint statement alone); the labels
    # ending "+recorder" and "(retry)" add the run recorder, the rerun.
    variants: dict[str, Callable[[], CheckpointStore] | None] = {
        "floor": None,
        "memory": InMemoryCheckpointStore,
        "postgres": postgres,
        "postgres+recorder": postgres,
        "postgres sync": partial(postgres, synchronous=True),
        "postgres (retry)": postgres,
    }
    rows = []
    for shape, build in SHAPES.items():
        plan = validate(definition_from_json({"nodes": build(n)}), NodeRegistry([Noop()]))
        for label, make in variants.items():
            key = f"runner.{shape}.{label.replace(' ', '-').replace('(', '').replace(')', '')}"
            row = Row(
                key,
                f"flow runner in-process, {shape} of {n} no-op nodes, {label}",
                "python (in-process)",
                offered=f"{runs} x {n} nodes",
                unit="nodes/s",
                baseline=None if label == "floor" else f"runner.{shape}.floor",
            )
            goal = label in ("postgres", "postgres+recorder")
            work = partial(_measured, row, n, partial(_variant, ctx, plan, make, label), goal)
            # No server group: the in-process runner loads this process and PostgreSQL only.
            rows.append(await ctx.measure(row, "", work))
    # The peer: DBOS Transact's chain of n no-op steps in the same PostgreSQL,
    # synchronous commit off and on (harness/dbos_peer.py).
    postmaster = next(iter(ctx.pg_roots()), None)
    for synchronous, key, mode in ((False, "dbos", "off"), (True, "dbos-sync", "on")):
        row = Row(
            f"runner.chain.{key}",
            f"DBOS Transact in-process, chain of {n} no-op steps, synchronous_commit {mode}",
            "python (in-process)",
            offered=f"{runs} x {n} steps",
            unit="nodes/s",
            baseline="runner.chain.floor",
        )
        rounds = partial(dbos_peer.measure, ctx.db.dsn, n, runs, synchronous, postmaster)
        rows.append(await ctx.measure(row, "", partial(_measured, row, n, rounds, False)))
    return rows
