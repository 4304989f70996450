"""Flow runner benchmark: per-node overhead of no-op nodes, per checkpoint store.

    .venv/bin/python perf/flow_bench.py [--nodes 1000] [--rounds 3] [--max-seconds 300] [--strict]

Shapes: a chain of N nodes (each depends on the previous one: no concurrency)
and a fan-out (one root, N-1 independent leaves, the default concurrency of 8).
Every node is `bench.noop` (returns {"n": i}), so the time is the runner's own
work: scheduling, cache key, hooks, output digest and the checkpoint write.

Rows:
- memory:             InMemoryCheckpointStore;
- postgres:           PostgresCheckpointStore (one transaction per checkpoint);
- postgres+recorder:  the service path: checkpoints over the run's own
                      connection (the one holding its advisory lock) plus the
                      run recorder writing node status and events
                      (flow_run_node / flow_run_event, batched), as
                      FlowRunnerService does;
- postgres sync:      PostgresCheckpointStore(synchronous=True): every
                      checkpoint waits for the WAL flush (informational);
- postgres (retry):   the same run again: every node skipped from its checkpoint.

Uses DATABASE_URL, else KAIREON_TEST_DATABASE_URL, else an embedded PostgreSQL
in a temporary directory; a throwaway database is created and dropped. Prints
the median of --rounds per row; goal: <= 2 ms per node with the PostgreSQL
store (exit status 1 with --strict when missed). Bounded by --max-seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import statistics
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "server")]

from kaireon_server.flow import (  # noqa: E402
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
from kaireon_server.flow.locks import dedicated_connection  # noqa: E402
from kaireon_server.flow.nodes.base import Config, NodeContext, NodeSetup, NodeType  # noqa: E402
from kaireon_server.flow.recorder import RunRecorder  # noqa: E402
from kaireon_server.flow.stores import CheckpointStore, SharedConnection  # noqa: E402
from kaireon_server.flow.validation import Plan  # noqa: E402
from kaireon_server.platform.config import Settings  # noqa: E402
from kaireon_server.platform.db import Database, connect_database  # noqa: E402
from tests.support.pg import create_database, drop_database, embedded_server  # noqa: E402

GOAL_MS = 2.0


class Noop(NodeType[int]):
    name = "bench.noop"

    def parse_config(self, config: Mapping[str, Any], setup: NodeSetup) -> int:
        return int(Config(config, {"n"}).integer("n"))

    async def run(self, ctx: NodeContext, config: int, inputs: Mapping[str, Any]) -> Any:
        return {"n": config}


def chain(n: int) -> list[dict[str, Any]]:
    return [
        {
            "id": f"n{i}",
            "type": "bench.noop",
            "config": {"n": i},
            "dependsOn": [f"n{i - 1}"] if i else [],
        }
        for i in range(n)
    ]


def fan_out(n: int) -> list[dict[str, Any]]:
    leaves = [
        {"id": f"n{i}", "type": "bench.noop", "config": {"n": i}, "dependsOn": ["n0"]}
        for i in range(1, n)
    ]
    return [{"id": "n0", "type": "bench.noop", "config": {"n": 0}}, *leaves]


async def timed_run(
    db: Database, store: CheckpointStore, plan: Plan, *, recorder: bool, run_id: str
) -> float:
    tenant = "bench"
    hooks = []
    own: asyncpg.Connection | None = None
    if recorder:
        own = await dedicated_connection(db)
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
            )
        hooks.append(RunRecorder(db, tenant, run_id, 1, 1))
    runner = FlowRunner(store, hooks=hooks, services=NodeServices(db=db))
    started = time.perf_counter()
    result = await runner.run(plan, tenant_id=tenant, run_id=run_id)
    for hook in hooks:
        await hook.close()
    elapsed = time.perf_counter() - started
    if own is not None:
        await own.close()
    if result.state is not RunState.SUCCEEDED:
        raise RuntimeError(f"benchmark run failed: {result.error}")
    return elapsed


async def measure(
    db: Database,
    plan: Plan,
    make_store: Callable[[], CheckpointStore],
    *,
    rounds: int,
    recorder: bool = False,
    rerun: bool = False,
    deadline: float,
) -> float:
    times = []
    for _ in range(rounds):
        store = make_store()
        run_id = f"bench-{secrets.token_hex(4)}"
        if rerun:
            await timed_run(db, store, plan, recorder=False, run_id=run_id)
        times.append(await timed_run(db, store, plan, recorder=recorder, run_id=run_id))
        if time.monotonic() > deadline:
            break
    return statistics.median(times)


@contextlib.asynccontextmanager
async def database() -> AsyncIterator[Database]:
    admin = os.environ.get("DATABASE_URL") or os.environ.get("KAIREON_TEST_DATABASE_URL")
    with contextlib.ExitStack() as stack:
        if not admin:
            admin = str(stack.enter_context(embedded_server()).get_uri())
        dsn = await create_database(admin, prefix="kaireon_flow_bench")
        db = await connect_database(
            Settings.from_env({"DATABASE_URL": dsn, "KAIREON_TRUST_HEADERS": "true"})
        )
        try:
            yield db
        finally:
            await db.close()
            await drop_database(admin, dsn)


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-seconds", type=float, default=300)
    parser.add_argument("--strict", action="store_true", help="exit 1 when the goal is missed")
    args = parser.parse_args()
    registry = NodeRegistry([Noop()])
    shapes = {
        "chain": validate(definition_from_json({"nodes": chain(args.nodes)}), registry),
        "fan-out": validate(definition_from_json({"nodes": fan_out(args.nodes)}), registry),
    }
    deadline = time.monotonic() + args.max_seconds
    rows: list[tuple[str, str, float]] = []
    missed = False
    async with database() as db, asyncio.timeout(args.max_seconds * 1.5):
        variants: list[tuple[str, Callable[[], CheckpointStore], dict[str, bool]]] = [
            ("memory", InMemoryCheckpointStore, {}),
            ("postgres", lambda: PostgresCheckpointStore(db), {}),
            ("postgres+recorder", lambda: PostgresCheckpointStore(db), {"recorder": True}),
            ("postgres sync", lambda: PostgresCheckpointStore(db, synchronous=True), {}),
            ("postgres (retry)", lambda: PostgresCheckpointStore(db), {"rerun": True}),
        ]
        for shape, plan in shapes.items():
            for label, make_store, options in variants:
                seconds = await measure(
                    db, plan, make_store, rounds=args.rounds, deadline=deadline, **options
                )
                rows.append((shape, label, seconds))
    print(f"{'shape':<8} {'store':<19} {'nodes':>6} {'total s':>8} {'ms/node':>8}  goal")
    for shape, label, seconds in rows:
        per_node = seconds * 1000 / args.nodes
        goal = ""
        if label in ("postgres", "postgres+recorder"):
            ok = per_node <= GOAL_MS
            missed = missed or not ok
            goal = f"<= {GOAL_MS} ms {'ok' if ok else 'MISSED'}"
        print(f"{shape:<8} {label:<19} {args.nodes:>6} {seconds:>8.3f} {per_node:>8.3f}  {goal}")
    return 1 if (missed and args.strict) else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
