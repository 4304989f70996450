"""FlowRunnerService over a real gRPC channel against the in-process server."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from kaireon.audit.v1 import audit_pb2, audit_pb2_grpc
from kaireon.flow.v1 import flow_pb2, flow_pb2_grpc
from kaireon_server.platform.db import Database
from tests.flow.support import bad_request, counts, definition, node_states, step, wait_finished
from tests.support.server import metadata


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> flow_pb2_grpc.FlowRunnerServiceStub:
    return flow_pb2_grpc.FlowRunnerServiceStub(channel)


async def start(stub, tenant, defn, run_id="", role="operator") -> flow_pb2.Run:
    reply = await stub.StartRun(
        flow_pb2.StartRunRequest(definition=defn, run_id=run_id), metadata=metadata(tenant, role)
    )
    return reply.run


async def audit_actions(channel: grpc.aio.Channel, tenant: str) -> list[tuple[str, str]]:
    audit = audit_pb2_grpc.AuditServiceStub(channel)
    reply = await audit.ListAuditEvents(
        audit_pb2.ListAuditEventsRequest(entity_type="flow_run"), metadata=metadata(tenant, "admin")
    )
    return [(e.action, e.entity_id) for e in reply.events]


async def test_start_runs_to_success(stub, channel, tenant, tmp_path: Path) -> None:
    counter = tmp_path / "count"
    defn = definition(
        step("a", counter_file=str(counter)),
        step("b", "a", counter_file=str(counter)),
        name="nightly",
    )
    run = await start(stub, tenant, defn, run_id="run-1")
    assert run.run_id == "run-1" and run.state == flow_pb2.RUN_STATE_RUNNING and run.attempt == 1
    assert [n.node_id for n in run.nodes] == ["a", "b"]
    assert run.definition.name == "nightly" and len(run.definition_digest) == 64
    final = await wait_finished(stub, tenant, "run-1")
    assert final.state == flow_pb2.RUN_STATE_SUCCEEDED
    assert node_states(final) == {"a": "COMPLETED", "b": "COMPLETED"}
    assert all(len(n.cache_key) == 64 and n.attempts == 1 for n in final.nodes)
    assert all(n.type == "test.step" and n.end_time.seconds > 0 for n in final.nodes)
    assert counts(counter, "run-1") == {"a": 1, "b": 1}
    assert await audit_actions(channel, tenant) == [("flow_run_start", "run-1")]


async def test_generated_run_id(stub, tenant) -> None:
    run = await start(stub, tenant, definition(step("a")))
    assert len(run.run_id) == 32
    assert (await wait_finished(stub, tenant, run.run_id)).state == flow_pb2.RUN_STATE_SUCCEEDED


async def test_retry_after_failure_resumes(stub, channel, tenant, tmp_path: Path) -> None:
    counter, flag = tmp_path / "count", tmp_path / "fail"
    flag.write_text("")
    defn = definition(
        step("a", counter_file=str(counter)),
        step("b", "a", counter_file=str(counter)),
        step("c", "b", counter_file=str(counter), fail_flag=str(flag)),
        step("d", "c", counter_file=str(counter)),
    )
    await start(stub, tenant, defn, run_id="r")
    failed = await wait_finished(stub, tenant, "r")
    assert failed.state == flow_pb2.RUN_STATE_FAILED
    assert failed.error == "node 'c' failed: planned failure (flag file)"
    assert node_states(failed) == {
        "a": "COMPLETED",
        "b": "COMPLETED",
        "c": "FAILED",
        "d": "CANCELLED",
    }
    assert [n.error for n in failed.nodes if n.node_id == "c"] == ["planned failure (flag file)"]

    flag.unlink()
    retried = await stub.RetryRun(
        flow_pb2.RetryRunRequest(run_id="r"), metadata=metadata(tenant, "operator")
    )
    assert retried.run.attempt == 2 and retried.run.state == flow_pb2.RUN_STATE_RUNNING
    done = await wait_finished(stub, tenant, "r")
    assert done.state == flow_pb2.RUN_STATE_SUCCEEDED and done.attempt == 2 and done.error == ""
    assert node_states(done) == {"a": "SKIPPED", "b": "SKIPPED", "c": "COMPLETED", "d": "COMPLETED"}
    assert counts(counter, "r") == {"a": 1, "b": 1, "c": 2, "d": 1}
    assert await audit_actions(channel, tenant) == [
        ("flow_run_start", "r"),
        ("flow_run_retry", "r"),
    ]


async def test_retry_with_revised_definition_reruns_changed_nodes_only(
    stub, tenant, tmp_path
) -> None:
    counter = tmp_path / "count"
    nodes = [
        step("a", counter_file=str(counter)),
        step("b", "a", counter_file=str(counter)),
        step("c", counter_file=str(counter)),
    ]
    await start(stub, tenant, definition(*nodes), run_id="rev")
    await wait_finished(stub, tenant, "rev")
    nodes[1] = step("b", "a", counter_file=str(counter), value=7)
    reply = await stub.RetryRun(
        flow_pb2.RetryRunRequest(run_id="rev", definition=definition(*nodes)),
        metadata=metadata(tenant, "operator"),
    )
    assert reply.run.definition.nodes[1].config["value"] == 7
    done = await wait_finished(stub, tenant, "rev")
    assert node_states(done) == {"a": "SKIPPED", "b": "COMPLETED", "c": "SKIPPED"}
    assert counts(counter, "rev") == {"a": 1, "b": 2, "c": 1}


async def test_clear_then_retry_reruns_everything(stub, channel, tenant, tmp_path) -> None:
    counter = tmp_path / "count"
    await start(
        stub,
        tenant,
        definition(step("a", counter_file=str(counter)), step("b", "a", counter_file=str(counter))),
        run_id="cl",
    )
    await wait_finished(stub, tenant, "cl")
    cleared = await stub.ClearCheckpoints(
        flow_pb2.ClearCheckpointsRequest(run_id="cl"), metadata=metadata(tenant, "operator")
    )
    assert cleared.cleared == 2
    after = (await stub.GetRun(flow_pb2.GetRunRequest(run_id="cl"), metadata=metadata(tenant))).run
    assert all(n.cache_key == "" for n in after.nodes)
    await stub.RetryRun(
        flow_pb2.RetryRunRequest(run_id="cl"), metadata=metadata(tenant, "operator")
    )
    done = await wait_finished(stub, tenant, "cl")
    assert node_states(done) == {"a": "COMPLETED", "b": "COMPLETED"}
    assert counts(counter, "cl") == {"a": 2, "b": 2}
    assert ("flow_run_clear_checkpoints", "cl") in await audit_actions(channel, tenant)


async def test_second_start_or_retry_of_running_run_is_refused(stub, tenant) -> None:
    # Long enough for the three refusals below to land while it runs on a loaded machine
    # (1.5 s was not: a CI pass beside other load saw ClearCheckpoints after its end).
    await start(stub, tenant, definition(step("slow", sleep=5)), run_id="busy")
    with pytest.raises(grpc.aio.AioRpcError) as started:
        await start(stub, tenant, definition(step("x")), run_id="busy")
    assert started.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.aio.AioRpcError) as retried:
        await stub.RetryRun(
            flow_pb2.RetryRunRequest(run_id="busy"), metadata=metadata(tenant, "operator")
        )
    assert retried.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.aio.AioRpcError) as cleared:
        await stub.ClearCheckpoints(
            flow_pb2.ClearCheckpointsRequest(run_id="busy"), metadata=metadata(tenant, "operator")
        )
    assert cleared.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert (await wait_finished(stub, tenant, "busy")).state == flow_pb2.RUN_STATE_SUCCEEDED
    with pytest.raises(grpc.aio.AioRpcError) as again:
        await start(stub, tenant, definition(step("x")), run_id="busy")
    assert again.value.code() == grpc.StatusCode.ALREADY_EXISTS


async def test_burst_of_starts_beyond_max_runs_is_refused_at_once(stub, app, tenant) -> None:
    """Admission counts runs still starting: a burst of concurrent StartRun calls
    cannot all pass the max_runs check before the first one launches (each would
    open a dedicated connection: PostgreSQL ran out of them in the soak)."""
    from kaireon_server.flow.service import FlowCapability

    flow = next(c for c in app.capabilities if isinstance(c, FlowCapability))
    limit = flow.manager.limits.max_runs
    burst = 2 * limit + 8

    async def attempt(i: int) -> str:
        try:
            await start(stub, tenant, definition(step("slow", sleep=3)), run_id=f"burst{i}")
        except grpc.aio.AioRpcError as exc:
            _, _, reason = bad_request(exc)
            return f"{exc.code().name}:{reason}"
        return "OK"

    outcomes = await asyncio.gather(*(attempt(i) for i in range(burst)))
    accepted = [f"burst{i}" for i, outcome in enumerate(outcomes) if outcome == "OK"]
    # Runs of earlier tests may still hold slots: at most `limit`, never more.
    assert 1 <= len(accepted) <= limit, outcomes
    # One tenant: its share (KAIREON_FLOW_TENANT_MAX_RUNS) may be what refuses.
    assert set(outcomes) <= {
        "OK",
        "RESOURCE_EXHAUSTED:FLOW_RUNS_EXHAUSTED",
        "RESOURCE_EXHAUSTED:FLOW_TENANT_RUNS_EXHAUSTED",
    }, outcomes
    for run_id in accepted:
        assert (await wait_finished(stub, tenant, run_id)).state == flow_pb2.RUN_STATE_SUCCEEDED
    # Every slot is free again: the admission count went back down.
    assert (await start(stub, tenant, definition(step("x")), run_id="after")).run_id == "after"


async def test_cancel_run(stub, channel, tenant) -> None:
    await start(
        stub,
        tenant,
        definition(step("a"), step("slow", "a", sleep=30), step("z", "slow")),
        run_id="cx",
    )
    await asyncio.sleep(0.3)
    reply = await stub.CancelRun(
        flow_pb2.CancelRunRequest(run_id="cx"), metadata=metadata(tenant, "operator")
    )
    assert reply.run.state == flow_pb2.RUN_STATE_CANCELLED
    assert reply.run.cancel_requested and reply.run.error == "cancelled by request"
    assert node_states(reply.run) == {"a": "COMPLETED", "slow": "CANCELLED", "z": "CANCELLED"}
    with pytest.raises(grpc.aio.AioRpcError) as again:
        await stub.CancelRun(
            flow_pb2.CancelRunRequest(run_id="cx"), metadata=metadata(tenant, "operator")
        )
    assert again.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert ("flow_run_cancel", "cx") in await audit_actions(channel, tenant)
    # A cancelled run resumes: the completed node is skipped.
    await stub.RetryRun(
        flow_pb2.RetryRunRequest(
            run_id="cx",
            definition=definition(step("a"), step("slow", "a", sleep=0), step("z", "slow")),
        ),
        metadata=metadata(tenant, "operator"),
    )
    done = await wait_finished(stub, tenant, "cx")
    assert node_states(done) == {"a": "SKIPPED", "slow": "COMPLETED", "z": "COMPLETED"}


async def test_watch_streams_events_until_finished(stub, tenant) -> None:
    await start(stub, tenant, definition(step("a", sleep=0.2), step("b", "a")), run_id="w")
    events = []
    async for event in stub.WatchRun(
        flow_pb2.WatchRunRequest(run_id="w"), metadata=metadata(tenant, "viewer")
    ):
        events.append(event)
    kinds = [flow_pb2.RunEventType.Name(e.type).removeprefix("RUN_EVENT_TYPE_") for e in events]
    assert kinds[0] == "SNAPSHOT" and kinds[-1] == "RUN_FINISHED"
    node_events = [
        (k, e.node_id) for k, e in zip(kinds, events, strict=True) if k.startswith("NODE")
    ]
    # The snapshot may already include a's start; everything after it arrives in order.
    assert node_events[-3:] == [
        ("NODE_COMPLETED", "a"),
        ("NODE_STARTED", "b"),
        ("NODE_COMPLETED", "b"),
    ]
    completed_b = events[-2]
    assert (
        completed_b.node.state == flow_pb2.NODE_STATE_COMPLETED
        and len(completed_b.node.cache_key) == 64
    )
    assert completed_b.run.state == flow_pb2.RUN_STATE_RUNNING and completed_b.seq > 0
    assert not completed_b.run.HasField("definition") and not completed_b.run.nodes
    assert events[-1].run.state == flow_pb2.RUN_STATE_SUCCEEDED and len(events[-1].run.nodes) == 2
    seqs = [e.seq for e in events[1:]]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    # Watching a finished run: its snapshot, then the same run_finished event.
    again = [
        e
        async for e in stub.WatchRun(
            flow_pb2.WatchRunRequest(run_id="w"), metadata=metadata(tenant)
        )
    ]
    assert [e.type for e in again] == [
        flow_pb2.RUN_EVENT_TYPE_SNAPSHOT,
        flow_pb2.RUN_EVENT_TYPE_RUN_FINISHED,
    ]
    assert again[0].run.state == flow_pb2.RUN_STATE_SUCCEEDED
    assert (again[1].seq, again[1].event_time, again[1].run) == (
        events[-1].seq,
        events[-1].event_time,
        events[-1].run,
    )


async def test_list_runs_pages_and_filters(stub, tenant) -> None:
    for i in range(3):
        await start(stub, tenant, definition(step("a")), run_id=f"l{i}")
        await wait_finished(stub, tenant, f"l{i}")
    page1 = await stub.ListRuns(flow_pb2.ListRunsRequest(page_size=2), metadata=metadata(tenant))
    assert [r.run_id for r in page1.runs] == ["l2", "l1"] and page1.next_page_token
    assert not page1.runs[0].HasField("definition") and not page1.runs[0].nodes
    page2 = await stub.ListRuns(
        flow_pb2.ListRunsRequest(page_size=2, page_token=page1.next_page_token),
        metadata=metadata(tenant),
    )
    assert [r.run_id for r in page2.runs] == ["l0"] and page2.next_page_token == ""
    failed = await stub.ListRuns(
        flow_pb2.ListRunsRequest(state=flow_pb2.RUN_STATE_FAILED), metadata=metadata(tenant)
    )
    assert list(failed.runs) == []


async def test_runs_are_invisible_to_other_tenants(stub, tenant) -> None:
    await start(stub, tenant, definition(step("a")), run_id="mine")
    await wait_finished(stub, tenant, "mine")
    other = tenant + "x"
    calls = [
        stub.GetRun(flow_pb2.GetRunRequest(run_id="mine"), metadata=metadata(other)),
        stub.RetryRun(
            flow_pb2.RetryRunRequest(run_id="mine"), metadata=metadata(other, "operator")
        ),
        stub.CancelRun(
            flow_pb2.CancelRunRequest(run_id="mine"), metadata=metadata(other, "operator")
        ),
        stub.ClearCheckpoints(
            flow_pb2.ClearCheckpointsRequest(run_id="mine"), metadata=metadata(other, "operator")
        ),
    ]
    for call in calls:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as watched:
        async for _ in stub.WatchRun(
            flow_pb2.WatchRunRequest(run_id="mine"), metadata=metadata(other)
        ):
            pass
    assert watched.value.code() == grpc.StatusCode.NOT_FOUND
    listed = await stub.ListRuns(flow_pb2.ListRunsRequest(), metadata=metadata(other))
    assert list(listed.runs) == []
    # The same run id is free for the other tenant.
    run = await start(stub, other, definition(step("a")), run_id="mine")
    assert run.attempt == 1


async def test_viewer_cannot_start(stub, tenant) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await start(stub, tenant, definition(step("a")), role="viewer")
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.parametrize(
    ("nodes", "field", "node_id", "text"),
    [
        (
            [{"id": "a", "type": "no.such"}],
            "definition.nodes[0].type",
            "a",
            "unknown node type 'no.such'",
        ),
        (
            [
                {
                    "id": "a",
                    "type": "transform.filter",
                    "config": {"where": "x >"},
                    "dependsOn": ["s"],
                },
                {"id": "s", "type": "source.inline", "config": {"records": []}},
            ],
            "definition.nodes[0].config.where",
            "a",
            "unexpected token at position 3",
        ),
        ([step("a"), step("a")], "definition.nodes[1].id", "a", "duplicate node id 'a'"),
        ([step("a", "ghost")], "definition.nodes[0].depends_on[0]", "a", "unknown node 'ghost'"),
        (
            [step("a", "c"), step("b", "a"), step("c", "b")],
            "definition.nodes[0].depends_on",
            "a",
            "dependency cycle: a -> c -> b -> a",
        ),
        ([step("a", "a")], "definition.nodes[0].depends_on[0]", "a", "depends on itself"),
        (
            [{"id": "bad id!", "type": "test.step"}],
            "definition.nodes[0].id",
            "bad id!",
            "node ids are",
        ),
        ([], "definition.nodes", None, "at least one node"),
        (
            [{"id": "a", "type": "test.step", "timeoutSeconds": 100000}],
            "definition.nodes[0].timeout_seconds",
            "a",
            "at most 300",
        ),
        (
            [{"id": "a", "type": "test.step", "retry": {"maxAttempts": 11}}],
            "definition.nodes[0].retry.max_attempts",
            "a",
            "from 1 to 10",
        ),
        (
            [{"id": "a", "type": "test.step", "retry": {"backoffMultiplier": 0.5}}],
            "definition.nodes[0].retry.backoff_multiplier",
            "a",
            "at least 1",
        ),
    ],
)
async def test_invalid_definitions_name_the_node(
    stub, db: Database, tenant, nodes, field, node_id, text
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await start(stub, tenant, definition(*nodes), run_id="bad")
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    violations, info, reason = bad_request(err.value)
    assert reason == "INVALID_FLOW_DEFINITION"
    assert violations[0][0] == field and text in violations[0][1]
    if node_id is not None:
        assert info["node_id"] == node_id
    async with db.transaction(tenant) as con:
        assert await con.fetchval("SELECT count(*) FROM flow_run WHERE tenant_id = $1", tenant) == 0
        assert (
            await con.fetchval("SELECT count(*) FROM audit_log WHERE tenant_id = $1", tenant) == 0
        )


async def test_every_problem_is_reported(stub, tenant) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await start(
            stub,
            tenant,
            definition(
                step("a", "x"),
                {"id": "b", "type": "nope"},
                {"id": "c", "type": "transform.rename", "config": {"fields": {}}},
            ),
        )
    fields = [v[0] for v in bad_request(err.value)[0]]
    assert fields == [
        "definition.nodes[0].depends_on[0]",
        "definition.nodes[1].type",
        "definition.nodes[2].config.fields",
    ]


async def test_bad_run_id_and_missing_run(stub, tenant) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await start(stub, tenant, definition(step("a")), run_id="has space")
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_request(err.value)[0][0][0] == "run_id"
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await stub.RetryRun(
            flow_pb2.RetryRunRequest(run_id="nope"), metadata=metadata(tenant, "operator")
        )
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


async def test_checkpoints_of_old_finished_runs_are_purged(stub, app, db: Database, tenant) -> None:
    from kaireon_server.flow.service import FlowCapability

    flow = next(c for c in app.capabilities if isinstance(c, FlowCapability))
    for run_id in ("old", "recent"):
        await start(stub, tenant, definition(step("a"), step("b", "a")), run_id=run_id)
        await wait_finished(stub, tenant, run_id)
    async with db.transaction(tenant) as con:
        await con.execute(
            "UPDATE flow_run SET ended_at = now() - interval '8 days' WHERE tenant_id = $1 AND run_id = 'old'",
            tenant,
        )
    assert await flow.manager.purge_expired_checkpoints() >= 2
    async with db.transaction(tenant) as con:
        left = await con.fetch(
            "SELECT run_id, count(*) AS n FROM flow_run_checkpoint WHERE tenant_id = $1 GROUP BY run_id",
            tenant,
        )
    assert {r["run_id"]: r["n"] for r in left} == {"recent": 2}


async def test_start_run_refusals_change_nothing(stub, channel, tenant) -> None:
    """A repeated run id (ALREADY_EXISTS) keeps the first run and writes no audit
    row; a run id with a trailing newline or over 128 characters is refused; the
    same run id in another tenant is that tenant's own run."""
    first = await start(stub, tenant, definition(step("a")), run_id="once")
    await wait_finished(stub, tenant, "once")
    before = await audit_actions(channel, tenant)
    with pytest.raises(grpc.aio.AioRpcError) as again:
        await start(stub, tenant, definition(step("x"), step("y", "x")), run_id="once")
    assert again.value.code() == grpc.StatusCode.ALREADY_EXISTS
    kept = (await stub.GetRun(flow_pb2.GetRunRequest(run_id="once"), metadata=metadata(tenant))).run
    assert kept.definition_digest == first.definition_digest
    assert [n.node_id for n in kept.nodes] == ["a"]
    assert await audit_actions(channel, tenant) == before

    for bad in ("once\n", " once", "x" * 129, "-once"):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await start(stub, tenant, definition(step("a")), run_id=bad)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, bad
        assert bad_request(err.value)[0][0][0] == "run_id"
    assert await audit_actions(channel, tenant) == before

    other = f"{tenant}b"
    mine = await start(stub, other, definition(step("z"), step("w", "z")), run_id="once")
    assert [n.node_id for n in mine.nodes] == ["z", "w"]
    await wait_finished(stub, other, "once")
    still = (
        await stub.GetRun(flow_pb2.GetRunRequest(run_id="once"), metadata=metadata(tenant))
    ).run
    assert [n.node_id for n in still.nodes] == ["a"]
