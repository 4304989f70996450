"""The runner suite, run against both checkpoint stores (the `store` fixture).

Drives FlowRunner directly (no gRPC). Side effects are counted by the
`test.step` node type (services.extras["calls"]), so "not re-executed" is
observed, not assumed.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import Counter
from typing import Any

import pytest

from kaireon_server.flow import (
    CancelToken,
    FlowRunner,
    NodeEvent,
    NodeRegistry,
    NodeServices,
    NodeState,
    RunHooks,
    RunResult,
    RunState,
    definition_from_json,
    validate,
)
from kaireon_server.flow.stores import CheckpointStore
from kaireon_server.platform.db import Database


def step(node_id: str, *deps: str, **config: Any) -> dict[str, Any]:
    node: dict[str, Any] = {
        "id": node_id,
        "type": "test.step",
        "config": config,
        "dependsOn": list(deps),
    }
    for key in ("timeoutSeconds", "retry"):
        if key in config:
            node[key] = config.pop(key)
    return node


def plan_of(registry: NodeRegistry, *nodes: dict[str, Any], **options: Any) -> Any:
    return validate(definition_from_json({"nodes": list(nodes), **options}), registry)


class Recorder(RunHooks):
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.events: list[NodeEvent] = []
        self.result: RunResult | None = None

    async def on_node_start(self, event: NodeEvent) -> None:
        self.calls.append(("start", event.node_id))
        self.events.append(event)

    async def on_node_complete(self, event: NodeEvent) -> None:
        self.calls.append(("complete", event.node_id))
        self.events.append(event)

    async def on_node_skipped(self, event: NodeEvent) -> None:
        self.calls.append(("skipped", event.node_id))
        self.events.append(event)

    async def on_node_failed(self, event: NodeEvent) -> None:
        self.calls.append(("failed", event.node_id))
        self.events.append(event)

    async def on_run_complete(self, result: RunResult) -> None:
        self.calls.append(("run_complete", result.state.value))
        self.result = result


def new_runner(store: CheckpointStore, db: Database, *hooks: RunHooks) -> FlowRunner:
    return FlowRunner(store, hooks=list(hooks), services=NodeServices(db=db))


def calls(runner: FlowRunner) -> Counter[str]:
    return Counter(runner.services.extras.get("calls", []))


CHAIN = ("a", "b", "c", "d")


def chain_nodes(**overrides: dict[str, Any]) -> list[dict[str, Any]]:
    nodes, prev = [], ()
    for n in CHAIN:
        nodes.append(step(n, *prev, value=1, **overrides.get(n, {})))
        prev = (n,)
    return nodes


async def test_clean_run(
    store: CheckpointStore, db: Database, registry: NodeRegistry, tenant: str
) -> None:
    plan = plan_of(registry, *chain_nodes(), step("e", "a", value=10))
    runner = new_runner(store, db)
    result = await runner.run(plan, tenant_id=tenant, run_id="r1")
    assert result.state is RunState.SUCCEEDED and result.error == ""
    assert all(r.state is NodeState.COMPLETED and r.attempts == 1 for r in result.nodes.values())
    assert calls(runner) == Counter({"a": 1, "b": 1, "c": 1, "d": 1, "e": 1})
    assert result.outputs["d"] == {"node": "d", "total": 4}
    assert result.outputs["e"] == {"node": "e", "total": 11}
    saved = await store.load(tenant, "r1")
    assert set(saved) == {"a", "b", "c", "d", "e"}
    assert all(saved[n].cache_key == result.nodes[n].cache_key != "" for n in saved)
    assert saved["d"].output == {"node": "d", "total": 4}


async def test_retry_after_failure_skips_completed_and_reloads_outputs(
    store: CheckpointStore, db: Database, registry: NodeRegistry, tenant: str
) -> None:
    plan = plan_of(registry, *chain_nodes())
    runner = new_runner(store, db)
    runner.services.extras["fail"] = {"c"}
    first = await runner.run(plan, tenant_id=tenant, run_id="r")
    assert first.state is RunState.FAILED
    assert first.error == "node 'c' failed: planned failure"
    states = {n: r.state for n, r in first.nodes.items()}
    assert states == {
        "a": NodeState.COMPLETED,
        "b": NodeState.COMPLETED,
        "c": NodeState.FAILED,
        "d": NodeState.CANCELLED,
    }
    assert first.nodes["c"].error == "planned failure"
    assert set(await store.load(tenant, "r")) == {"a", "b"}

    runner.services.extras["fail"] = set()
    second = await runner.run(plan, tenant_id=tenant, run_id="r", run_attempt=2)
    assert second.state is RunState.SUCCEEDED
    assert second.skipped() == ["a", "b"] and second.executed() == ["c", "d"]
    # Side-effect counter: a and b ran once over both attempts; c twice (failed, then ok).
    assert calls(runner) == Counter({"a": 1, "b": 1, "c": 2, "d": 1})
    # Reloaded outputs: returned, and fed into c (total 3 needs b's total 2).
    assert second.outputs["b"] == {"node": "b", "total": 2}
    assert second.outputs["d"] == {"node": "d", "total": 4}
    assert second.nodes["a"].cache_key == first.nodes["a"].cache_key


async def test_clear_then_retry_reruns_everything(
    store: CheckpointStore, db: Database, registry: NodeRegistry, tenant: str
) -> None:
    plan = plan_of(registry, *chain_nodes())
    runner = new_runner(store, db)
    await runner.run(plan, tenant_id=tenant, run_id="r")
    assert await store.clear(tenant, "r") == 4
    assert await store.load(tenant, "r") == {}
    again = await runner.run(plan, tenant_id=tenant, run_id="r", run_attempt=2)
    assert again.state is RunState.SUCCEEDED and again.executed() == list(CHAIN)
    assert calls(runner) == Counter({n: 2 for n in CHAIN})


async def test_hooks_in_order_with_payloads(
    store: CheckpointStore, db: Database, registry: NodeRegistry, tenant: str
) -> None:
    plan = plan_of(registry, step("a", value=1), step("b", "a", value=2), step("c", "b", value=3))
    hooks = Recorder()
    runner = new_runner(store, db, hooks)
    runner.services.extras["fail"] = {"c"}
    await runner.run(plan, tenant_id=tenant, run_id="h")
    assert hooks.calls == [
        ("start", "a"),
        ("complete", "a"),
        ("start", "b"),
        ("complete", "b"),
        ("start", "c"),
        ("failed", "c"),
        ("run_complete", "failed"),
    ]
    complete_b = hooks.events[3]
    assert (
        complete_b.run_id == "h" and complete_b.tenant_id == tenant and complete_b.run_attempt == 1
    )
    assert complete_b.node_type == "test.step" and complete_b.output == {"node": "b", "total": 3}
    assert complete_b.status.state is NodeState.COMPLETED and complete_b.status.attempts == 1
    saved = await store.load(tenant, "h")
    assert complete_b.status.cache_key == saved["b"].cache_key
    assert complete_b.status.output_digest == saved["b"].output_digest
    failed_c = hooks.events[5]
    assert failed_c.error == "planned failure" and failed_c.status.state is NodeState.FAILED
    assert hooks.result is not None and hooks.result.error == "node 'c' failed: planned failure"

    retry_hooks = Recorder()
    retry = new_runner(store, db, retry_hooks)
    await retry.run(plan, tenant_id=tenant, run_id="h", run_attempt=2)
    assert retry_hooks.calls == [
        ("skipped", "a"),
        ("skipped", "b"),
        ("start", "c"),
        ("complete", "c"),
        ("run_complete", "succeeded"),
    ]
    skipped_b = retry_hooks.events[1]
    assert skipped_b.output == {"node": "b", "total": 3} and skipped_b.run_attempt == 2
    assert skipped_b.status.state is NodeState.SKIPPED and skipped_b.status.attempts == 0


async def test_changed_config_invalidates_node_and_descendants_only(
    store: CheckpointStore, db: Database, registry: NodeRegistry, tenant: str
) -> None:
    # a -> b -> c, a -> d, x alone
    nodes = [step("a"), step("b", "a"), step("c", "b"), step("d", "a"), step("x")]
    runner = new_runner(store, db)
    await runner.run(plan_of(registry, *nodes), tenant_id=tenant, run_id="cfg")
    nodes[1] = step("b", "a", value=5)
    result = await runner.run(
        plan_of(registry, *nodes), tenant_id=tenant, run_id="cfg", run_attempt=2
    )
    assert result.state is RunState.SUCCEEDED
    assert sorted(result.executed()) == ["b", "c"]
    assert sorted(result.skipped()) == ["a", "d", "x"]
    assert result.outputs["c"] == {"node": "c", "total": 7}
    # An unchanged definition now skips everything, including the re-run nodes.
    third = await runner.run(
        plan_of(registry, *nodes), tenant_id=tenant, run_id="cfg", run_attempt=3
    )
    assert third.executed() == [] and len(third.skipped()) == 5


async def test_timeout_and_retry_policy(
    store: CheckpointStore, db: Database, registry: NodeRegistry, tenant: str
) -> None:
    plan = plan_of(
        registry,
        step("slow", sleep=5, timeoutSeconds=0.2),
        step("flaky", fail_attempts=2, retry={"maxAttempts": 3, "initialBackoffSeconds": 0.01}),
        step("stubborn", fail_attempts=5, retry={"maxAttempts": 2, "initialBackoffSeconds": 0.01}),
    )
    runner = new_runner(store, db)
    result = await runner.run(plan, tenant_id=tenant, run_id="t")
    assert result.nodes["slow"].state is NodeState.FAILED
    assert result.nodes["slow"].error == "timed out after 0.2s"
    assert (
        result.nodes["flaky"].state is NodeState.COMPLETED and result.nodes["flaky"].attempts == 3
    )
    assert result.nodes["stubborn"].state is NodeState.FAILED
    assert result.nodes["stubborn"].attempts == 2
    assert set(await store.load(tenant, "t")) == {"flaky"}


async def test_concurrency_is_bounded(
    store: CheckpointStore, db: Database, registry: NodeRegistry, tenant: str
) -> None:
    plan = plan_of(registry, *[step(f"n{i}", sleep=0.05) for i in range(9)], maxConcurrency=3)
    runner = new_runner(store, db)
    result = await runner.run(plan, tenant_id=tenant, run_id="c")
    assert result.state is RunState.SUCCEEDED
    assert runner.services.extras["max_active"] == 3


async def test_failure_lets_running_siblings_finish_by_default(
    store: CheckpointStore, db: Database, registry: NodeRegistry, tenant: str
) -> None:
    plan = plan_of(
        registry, step("bad", sleep=0.05), step("sibling", sleep=0.4), step("after", "bad")
    )
    runner = new_runner(store, db)
    runner.services.extras["fail"] = {"bad"}
    result = await runner.run(plan, tenant_id=tenant, run_id="f")
    assert result.state is RunState.FAILED
    assert result.nodes["sibling"].state is NodeState.COMPLETED
    assert result.nodes["after"].state is NodeState.CANCELLED
    assert set(await store.load(tenant, "f")) == {"sibling"}


async def test_failure_can_cancel_running_siblings(
    store: CheckpointStore, db: Database, registry: NodeRegistry, tenant: str
) -> None:
    plan = plan_of(
        registry,
        step("bad", sleep=0.05),
        step("sibling", sleep=5),
        onFailure="FAILURE_MODE_CANCEL_RUNNING",
    )
    runner = new_runner(store, db)
    runner.services.extras["fail"] = {"bad"}
    result = await asyncio.wait_for(runner.run(plan, tenant_id=tenant, run_id="f2"), 3)
    assert result.state is RunState.FAILED
    assert result.nodes["sibling"].state is NodeState.CANCELLED
    assert await store.load(tenant, "f2") == {}


async def test_cancel_interrupts_running_nodes(
    store: CheckpointStore, db: Database, registry: NodeRegistry, tenant: str
) -> None:
    plan = plan_of(registry, step("quick"), step("long", "quick", sleep=10), step("never", "long"))
    runner = new_runner(store, db)
    token = CancelToken()
    task = asyncio.create_task(runner.run(plan, tenant_id=tenant, run_id="x", cancel=token))
    while "long" not in runner.services.extras.get("calls", []):
        await asyncio.sleep(0.01)
    token.cancel("cancelled by test")
    result = await asyncio.wait_for(task, 3)
    assert result.state is RunState.CANCELLED and result.error == "cancelled by test"
    assert result.nodes["long"].state is NodeState.CANCELLED
    assert result.nodes["never"].state is NodeState.CANCELLED
    assert set(await store.load(tenant, "x")) == {"quick"}


async def test_node_writes_commit_with_the_checkpoint(
    store: CheckpointStore, db: Database, registry: NodeRegistry, tenant: str
) -> None:
    run_id = f"w{secrets.token_hex(3)}"
    plan = plan_of(
        registry,
        step("writes", db_effect=True),
        step("rolls_back", db_effect=True, fail_after_effect=True),
    )
    result = await new_runner(store, db).run(plan, tenant_id=tenant, run_id=run_id)
    assert result.nodes["writes"].state is NodeState.COMPLETED
    assert result.nodes["rolls_back"].state is NodeState.FAILED
    async with db.transaction(tenant) as con:
        rows = await con.fetch(
            "SELECT node_id FROM flow_test_effect WHERE tenant_id = $1 AND run_id = $2",
            tenant,
            run_id,
        )
    # The failed node's write was rolled back with its (absent) checkpoint.
    assert [r["node_id"] for r in rows] == ["writes"]


async def test_non_json_output_fails_the_node(
    store: CheckpointStore, db: Database, registry: NodeRegistry, tenant: str
) -> None:
    plan = plan_of(registry, step("nan", nan_output=True))
    result = await new_runner(store, db).run(plan, tenant_id=tenant, run_id="nan")
    assert result.nodes["nan"].state is NodeState.FAILED
    assert "not canonical JSON" in result.nodes["nan"].error
    assert result.nodes["nan"].attempts == 1


async def test_runs_are_isolated_by_tenant_and_run_id(
    store: CheckpointStore, db: Database, registry: NodeRegistry, tenant: str
) -> None:
    plan = plan_of(registry, *chain_nodes())
    runner = new_runner(store, db)
    await runner.run(plan, tenant_id=tenant, run_id="same")
    other = await runner.run(plan, tenant_id=tenant + "b", run_id="same")
    assert other.executed() == list(CHAIN)
    assert await store.clear(tenant + "b", "same") == 4
    assert len(await store.load(tenant, "same")) == 4


@pytest.mark.parametrize("width", [50])
async def test_wide_fan_out_and_fan_in(
    store: CheckpointStore, db: Database, registry: NodeRegistry, tenant: str, width: int
) -> None:
    leaves = [step(f"l{i}", "root") for i in range(width)]
    plan = plan_of(registry, step("root"), *leaves, step("sink", *[f"l{i}" for i in range(width)]))
    result = await new_runner(store, db).run(plan, tenant_id=tenant, run_id="fan")
    assert result.state is RunState.SUCCEEDED
    assert result.outputs["sink"]["total"] == 1 + width * 2
