"""PostgresCheckpointStore.session: a run's checkpoints share one connection of
their own (tenant set for its session), opened at the first checkpoint, reopened
if it dies, closed when the run ends."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import asyncpg
import pytest

from kaireon_server.flow import (
    FlowRunner,
    NodeEvent,
    NodeRegistry,
    NodeServices,
    PostgresCheckpointStore,
    RunHooks,
    RunState,
    definition_from_json,
    validate,
)
from kaireon_server.flow.stores import CheckpointStore
from kaireon_server.platform.db import Database


@pytest.fixture
async def owner(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    con = await asyncpg.connect(database_url)
    yield con
    await con.close()


async def checkpoints(owner: asyncpg.Connection, tenant: str, run_id: str) -> dict[str, str]:
    rows = await owner.fetch(
        "SELECT node_id, cache_key FROM flow_run_checkpoint WHERE tenant_id = $1 AND run_id = $2",
        tenant,
        run_id,
    )
    return {r["node_id"]: r["cache_key"] for r in rows}


async def test_session_connection_is_the_runs_and_survives_a_dropped_connection(
    db: Database, owner: asyncpg.Connection, tenant: str
) -> None:
    store = PostgresCheckpointStore(db)
    async with store.session(tenant, "sess") as bound:
        assert isinstance(bound, PostgresCheckpointStore) and bound.connection is not None
        assert bound.connection.reopens
        await bound.writer(tenant, "sess", "a").commit("k" * 64, {"x": 1}, "d" * 64)
        con = bound.connection.con
        assert await con.fetchval("SELECT current_setting('kaireon.tenant_id')") == tenant
        # The server drops the connection between two nodes: the next checkpoint
        # goes through a new one.
        await owner.execute("SELECT pg_terminate_backend($1)", con.get_server_pid())
        await asyncio.sleep(0.1)
        await bound.writer(tenant, "sess", "b").commit("m" * 64, [1, 2], "e" * 64)
        assert bound.connection.con is not con
        reopened = bound.connection.con
    assert reopened.is_closed()
    assert await checkpoints(owner, tenant, "sess") == {"a": "k" * 64, "b": "m" * 64}
    # A store given its connection (the service's lock connection) is used as is.
    async with bound.session(tenant, "sess") as same:
        assert same is bound


class BoundStores(PostgresCheckpointStore):
    """Remembers the stores its sessions hand to the runner."""

    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self.bound: list[CheckpointStore] = []

    @contextlib.asynccontextmanager
    async def session(self, tenant_id: str, run_id: str) -> AsyncIterator[CheckpointStore]:
        async with super().session(tenant_id, run_id) as bound:
            self.bound.append(bound)
            yield bound


class ConnectionSeen(RunHooks):
    def __init__(self, store: BoundStores) -> None:
        self.store = store
        self.pids: set[int] = set()

    async def on_node_complete(self, event: NodeEvent) -> None:
        bound = self.store.bound[-1]
        assert isinstance(bound, PostgresCheckpointStore) and bound.connection is not None
        self.pids.add(bound.connection.con.get_server_pid())


async def test_runner_writes_a_runs_checkpoints_over_one_connection(
    db: Database, owner: asyncpg.Connection, tenant: str, registry: NodeRegistry
) -> None:
    nodes = [
        {"id": f"n{i}", "type": "test.step", "dependsOn": [f"n{i - 1}"] if i else []}
        for i in range(4)
    ]
    plan = validate(definition_from_json({"nodes": nodes}), registry)
    store = BoundStores(db)
    seen = ConnectionSeen(store)
    result = await FlowRunner(store, hooks=[seen], services=NodeServices(db=db)).run(
        plan, tenant_id=tenant, run_id="one-con"
    )
    assert result.state is RunState.SUCCEEDED
    assert len(store.bound) == 1 and len(seen.pids) == 1
    bound = store.bound[0]
    assert isinstance(bound, PostgresCheckpointStore) and bound.connection is not None
    with pytest.raises(RuntimeError, match="not opened"):
        _ = bound.connection.con  # closed (and forgotten) with the session
    assert set(await checkpoints(owner, tenant, "one-con")) == {"n0", "n1", "n2", "n3"}
