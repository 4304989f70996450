"""Flow runner benchmark: per-node overhead of no-op nodes, per checkpoint store.

    .venv/bin/python perf/flow_bench.py [--nodes 1000] [--rounds 3] [--shapes chain,fan-out]
                                        [--max-seconds 300] [--strict]

Shapes: a chain of N nodes (each depends on the previous one: no concurrency)
and a fan-out (one root, N-1 independent leaves, the default concurrency of 8).
Every node is `bench.noop` (returns {"n": i}), so the time is the runner's own
work: scheduling, cache key, hooks, output digest and the checkpoint write.

Rows:
- floor:              no runner: the checkpoint statement the runner sends per
                      node, N times back to back on one connection. One such
                      round trip per node is the least the PostgreSQL store
                      can cost (a node's checkpoint commits before its
                      dependents start); every other row is also printed as
                      a ratio to it, measured in the same run;
- memory:             InMemoryCheckpointStore;
- postgres:           PostgresCheckpointStore(db), as embedded: one statement
                      per checkpoint over a connection its run session opens;
- postgres+recorder:  the service path: checkpoints over the run's own
                      connection (the one holding its advisory lock) plus the
                      run recorder writing node status and events
                      (flow_run_node / flow_run_event, batched), as
                      FlowRunnerService does;
- postgres sync:      PostgresCheckpointStore(synchronous=True): every
                      checkpoint waits for the WAL flush (informational);
- postgres (retry):   the same run again: every node skipped from its checkpoint.

Columns: wall time per node, its ratio to the floor, and CPU per node of this
process (Python: runner, asyncpg) and of PostgreSQL (its backends; embedded
server only). On a shared machine wall time follows the load; CPU per node
moves much less, and under load wall time is roughly CPU / the share of a
core the processes get, so the CPU columns are the ones to compare.

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
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import psutil

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
from kaireon_server.flow.stores import (  # noqa: E402
    CHECKPOINT_UPSERT,
    CheckpointStore,
    SharedConnection,
)
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


@dataclass(frozen=True)
class Sample:
    seconds: float
    # CPU seconds of this process and of the PostgreSQL server (None: not embedded).
    cpu: float
    pg_cpu: float | None


class CpuMeter:
    """CPU time of this process and of the embedded PostgreSQL (postmaster + backends)."""

    def __init__(self, postmaster: int | None) -> None:
        self.postmaster = postmaster

    def pg(self) -> float | None:
        if self.postmaster is None:
            return None
        try:
            root = psutil.Process(self.postmaster)
            # Backends that exited (a run's closed connection) count in the postmaster's
            # children times once it has reaped them.
            own = root.cpu_times()
            total = own.children_user + own.children_system
            for proc in [root, *root.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    times = proc.cpu_times()
                    total += times.user + times.system
        except psutil.Error:
            return None
        return total

    @contextlib.asynccontextmanager
    async def sample(self, out: list[Sample]) -> AsyncIterator[None]:
        pg, cpu, started = self.pg(), time.process_time(), time.perf_counter()
        yield
        elapsed, used, pg_after = (
            time.perf_counter() - started,
            time.process_time() - cpu,
            self.pg(),
        )
        out.append(Sample(elapsed, used, None if pg is None or pg_after is None else pg_after - pg))


async def run_connection(db: Database, tenant: str) -> asyncpg.Connection:
    """A connection like a run's lock connection: outside the pool, tenant set for the session."""
    con = await dedicated_connection(db)
    await con.execute("SELECT set_config('kaireon.tenant_id', $1, false)", tenant)
    return con


async def timed_run(
    db: Database,
    store: CheckpointStore,
    plan: Plan,
    *,
    recorder: bool,
    run_id: str,
    meter: CpuMeter,
    out: list[Sample],
) -> None:
    tenant = "bench"
    hooks: list[RunRecorder] = []
    own: asyncpg.Connection | None = None
    if recorder:
        own = await run_connection(db, tenant)
        shared = SharedConnection(own)
        store = PostgresCheckpointStore(db, connection=shared)
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
    async with meter.sample(out):
        result = await runner.run(plan, tenant_id=tenant, run_id=run_id)
        for hook in hooks:
            await hook.close()
    if own is not None:
        await own.close()
    if result.state is not RunState.SUCCEEDED:
        raise RuntimeError(f"benchmark run failed: {result.error}")


async def floor(db: Database, nodes: int, *, meter: CpuMeter, out: list[Sample]) -> None:
    """The checkpoint statement of every node, back to back on one connection: no runner."""
    tenant, run_id = "bench", f"floor-{secrets.token_hex(4)}"
    con = await run_connection(db, tenant)
    try:
        async with meter.sample(out):
            for i in range(nodes):
                await con.execute(
                    CHECKPOINT_UPSERT, tenant, run_id, f"n{i}", "k" * 64, "d" * 64, {"n": i}, "off"
                )
    finally:
        await con.close()


async def measure(
    db: Database,
    plan: Plan,
    make_store: Callable[[], CheckpointStore] | None,
    *,
    rounds: int,
    meter: CpuMeter,
    recorder: bool = False,
    rerun: bool = False,
    deadline: float,
) -> Sample:
    samples: list[Sample] = []
    for _ in range(rounds):
        if make_store is None:
            await floor(db, len(plan.nodes), meter=meter, out=samples)
        else:
            store = make_store()
            run_id = f"bench-{secrets.token_hex(4)}"
            if rerun:
                await timed_run(db, store, plan, recorder=False, run_id=run_id, meter=meter, out=[])
            await timed_run(
                db, store, plan, recorder=recorder, run_id=run_id, meter=meter, out=samples
            )
        if time.monotonic() > deadline:
            break
    pg = [s.pg_cpu for s in samples if s.pg_cpu is not None]
    return Sample(
        statistics.median(s.seconds for s in samples),
        statistics.median(s.cpu for s in samples),
        statistics.median(pg) if len(pg) == len(samples) else None,
    )


@contextlib.asynccontextmanager
async def database() -> AsyncIterator[tuple[Database, int | None]]:
    """A throwaway database, and the postmaster's pid when the server is embedded."""
    admin = os.environ.get("DATABASE_URL") or os.environ.get("KAIREON_TEST_DATABASE_URL")
    postmaster: int | None = None
    with contextlib.ExitStack() as stack:
        if not admin:
            server = stack.enter_context(embedded_server())
            admin = str(server.get_uri())
            postmaster = server.get_pid()
        dsn = await create_database(admin, prefix="kaireon_flow_bench")
        db = await connect_database(
            Settings.from_env({"DATABASE_URL": dsn, "KAIREON_TRUST_HEADERS": "true"})
        )
        try:
            yield db, postmaster
        finally:
            await db.close()
            await drop_database(admin, dsn)


def _ms(value: float | None, nodes: int) -> str:
    return "-" if value is None else f"{value * 1000 / nodes:.3f}"


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--shapes", default="chain,fan-out", help="chain, fan-out or both")
    parser.add_argument("--max-seconds", type=float, default=300)
    parser.add_argument("--strict", action="store_true", help="exit 1 when the goal is missed")
    args = parser.parse_args()
    registry = NodeRegistry([Noop()])
    builders = {"chain": chain, "fan-out": fan_out}
    shapes = {
        name: validate(definition_from_json({"nodes": builders[name](args.nodes)}), registry)
        for name in args.shapes.split(",")
    }
    deadline = time.monotonic() + args.max_seconds
    rows: list[tuple[str, str, Sample]] = []
    missed = False
    async with database() as (db, postmaster), asyncio.timeout(args.max_seconds * 1.5):
        meter = CpuMeter(postmaster)
        variants: list[tuple[str, Callable[[], CheckpointStore] | None, dict[str, bool]]] = [
            ("floor", None, {}),
            ("memory", InMemoryCheckpointStore, {}),
            ("postgres", lambda: PostgresCheckpointStore(db), {}),
            ("postgres+recorder", lambda: PostgresCheckpointStore(db), {"recorder": True}),
            ("postgres sync", lambda: PostgresCheckpointStore(db, synchronous=True), {}),
            ("postgres (retry)", lambda: PostgresCheckpointStore(db), {"rerun": True}),
        ]
        for shape, plan in shapes.items():
            for label, make_store, options in variants:
                sample = await measure(
                    db,
                    plan,
                    make_store,
                    rounds=args.rounds,
                    meter=meter,
                    deadline=deadline,
                    **options,
                )
                rows.append((shape, label, sample))
    n = args.nodes
    print(
        f"{'shape':<8} {'store':<19} {'nodes':>6} {'total s':>8} {'ms/node':>8} {'x floor':>8} "
        f"{'CPU ms/node':>11} {'PG ms/node':>10}  goal"
    )
    floors = {shape: sample.seconds for shape, label, sample in rows if label == "floor"}
    for shape, label, sample in rows:
        per_node = sample.seconds * 1000 / n
        goal = ""
        if label in ("postgres", "postgres+recorder"):
            ok = per_node <= GOAL_MS
            missed = missed or not ok
            goal = f"<= {GOAL_MS} ms {'ok' if ok else 'MISSED'}"
        ratio = sample.seconds / floors[shape] if floors.get(shape) else 0.0
        print(
            f"{shape:<8} {label:<19} {n:>6} {sample.seconds:>8.3f} {per_node:>8.3f} "
            f"{ratio:>7.2f}x {_ms(sample.cpu, n):>11} {_ms(sample.pg_cpu, n):>10}  {goal}"
        )
    print(f"load average {'/'.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} cores")
    return 1 if (missed and args.strict) else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
