"""sink.dsar_export and sink.erasure through FlowRunnerService (real DSAR / erasure code)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import grpc
import pytest

from kaireon.erasure.v1 import erasure_pb2, erasure_pb2_grpc
from kaireon.flow.v1 import flow_pb2, flow_pb2_grpc
from kaireon_server.dsar.model import CreateCommand
from kaireon_server.dsar.requests import create_in
from kaireon_server.platform.db import Database
from tests.flow.support import bad_request, definition, node_states, wait_finished
from tests.support.server import metadata


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> flow_pb2_grpc.FlowRunnerServiceStub:
    return flow_pb2_grpc.FlowRunnerServiceStub(channel)


def subjects(*ids: str) -> dict[str, object]:
    return {
        "id": "src",
        "type": "source.inline",
        "config": {"records": [{"customer_id": i, "note": "x"} for i in ids]},
    }


async def _output(db: Database, tenant: str, run_id: str, node_id: str) -> object:
    async with db.transaction(tenant) as con:
        return await con.fetchval(
            "SELECT output FROM flow_run_checkpoint WHERE tenant_id = $1 AND run_id = $2 AND node_id = $3",
            tenant,
            run_id,
            node_id,
        )


async def test_dsar_export_sink_queues_one_request_per_subject(stub, db: Database, tenant) -> None:
    defn = definition(
        subjects("subj-one", "subj-two", "subj-one"),
        {"id": "dsar", "type": "sink.dsar_export", "dependsOn": ["src"]},
    )
    await stub.StartRun(
        flow_pb2.StartRunRequest(definition=defn, run_id="d1"),
        metadata=metadata(tenant, "operator"),
    )
    assert (await wait_finished(stub, tenant, "d1")).state == flow_pb2.RUN_STATE_SUCCEEDED
    output = await _output(db, tenant, "d1", "dsar")
    assert output["created"] == 2 and output["existing"] == 0 and len(output["requestIds"]) == 2
    async with db.transaction(tenant) as con:
        rows = await con.fetch(
            "SELECT subject_id, request_type, created_by FROM dsar_request WHERE tenant_id = $1 ORDER BY subject_id",
            tenant,
        )
        audits = await con.fetch(
            "SELECT changes FROM audit_log WHERE tenant_id = $1 AND action = 'dsar_request_created'",
            tenant,
        )
    assert [(r["subject_id"], r["request_type"], r["created_by"]) for r in rows] == [
        ("subj-one", "export", "operator@headers"),
        ("subj-two", "export", "operator@headers"),
    ]
    # The row CreateDsarRequest writes (one use case), plus the run that queued it.
    assert [a["changes"] for a in audits] == [
        {"requestType": "export", "encrypt": False, "flowRunId": "d1"}
    ] * 2
    # The subjects are personal data: they are not in the node's output.
    # (Names no hex UUID can contain, so the check cannot pass or fail by chance.)
    assert "subj-" not in str(output)

    # Re-running the node (checkpoints cleared) finds the same requests: no duplicates.
    await stub.ClearCheckpoints(
        flow_pb2.ClearCheckpointsRequest(run_id="d1"), metadata=metadata(tenant, "operator")
    )
    await stub.RetryRun(
        flow_pb2.RetryRunRequest(run_id="d1"), metadata=metadata(tenant, "operator")
    )
    await wait_finished(stub, tenant, "d1")
    again = await _output(db, tenant, "d1", "dsar")
    assert (
        again["created"] == 0
        and again["existing"] == 2
        and again["requestIds"] == output["requestIds"]
    )


async def test_dsar_export_sink_refuses_a_derived_key_taken_by_another_request(
    stub, db: Database, tenant
) -> None:
    """The sink goes through the DSAR use case: its idempotency rule holds there too."""
    key = hashlib.sha256(b"d2\x00dsar\x00subj-one").hexdigest()
    async with db.transaction(tenant) as con:
        await create_in(
            con, tenant, "someone", CreateCommand("export", "subj-one", True, f"flow-{key}")
        )
    defn = definition(
        subjects("subj-one"), {"id": "dsar", "type": "sink.dsar_export", "dependsOn": ["src"]}
    )
    await stub.StartRun(
        flow_pb2.StartRunRequest(definition=defn, run_id="d2"),
        metadata=metadata(tenant, "operator"),
    )
    run = await wait_finished(stub, tenant, "d2")
    assert run.state == flow_pb2.RUN_STATE_FAILED
    assert "idempotency_key_reused" in run.error
    async with db.transaction(tenant) as con:
        count = await con.fetchval("SELECT count(*) FROM dsar_request WHERE tenant_id = $1", tenant)
    assert count == 1


async def _seed_customer(db: Database, tenant: str, customer: str) -> None:
    async with db.transaction(tenant) as con:
        await con.execute(
            "INSERT INTO interaction_history (tenant_id, customer_id, offer_id, channel, event_type, occurred_at) "
            "VALUES ($1, $2, 'o1', 'web', 'click', $3)",
            tenant,
            customer,
            datetime(2024, 1, 1, tzinfo=UTC),
        )


async def _rows(db: Database, tenant: str) -> dict[str, int]:
    async with db.transaction(tenant) as con:
        rows = await con.fetch(
            "SELECT customer_id, count(*) AS n FROM interaction_history WHERE tenant_id = $1 GROUP BY 1",
            tenant,
        )
    return {r["customer_id"]: r["n"] for r in rows}


async def test_erasure_sink_needs_admin_and_erases(stub, channel, db: Database, tenant) -> None:
    for customer in ("c1", "c2", "c3"):
        await _seed_customer(db, tenant, customer)
    defn = definition(
        subjects("c1", "c2"), {"id": "erase", "type": "sink.erasure", "dependsOn": ["src"]}
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.StartRun(
            flow_pb2.StartRunRequest(definition=defn, run_id="e1"),
            metadata=metadata(tenant, "operator"),
        )
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "sink.erasure" in refused.value.details()
    assert bad_request(refused.value)[1] == {"required_role": "admin"}

    await stub.StartRun(
        flow_pb2.StartRunRequest(definition=defn, run_id="e1"), metadata=metadata(tenant, "admin")
    )
    assert (await wait_finished(stub, tenant, "e1")).state == flow_pb2.RUN_STATE_SUCCEEDED
    assert await _rows(db, tenant) == {"c3": 1}
    output = await _output(db, tenant, "e1", "erase")
    assert (
        output["erased"] == 2 and output["deletedRows"] == 2 and len(output["auditEventIds"]) == 2
    )
    async with db.transaction(tenant) as con:
        actors = await con.fetch(
            "SELECT actor FROM audit_log WHERE tenant_id = $1 AND action = 'gdpr_erasure'", tenant
        )
    assert [r["actor"] for r in actors] == ["admin@headers", "admin@headers"]


async def test_erasure_sink_and_legal_holds(stub, channel, db: Database, tenant) -> None:
    for customer in ("c1", "c2"):
        await _seed_customer(db, tenant, customer)
    erasure = erasure_pb2_grpc.ErasureServiceStub(channel)
    await erasure.SetLegalHold(
        erasure_pb2.SetLegalHoldRequest(customer_id="c1", reason="CASE-1"),
        metadata=metadata(tenant, "admin"),
    )
    strict = definition(
        subjects("c1", "c2"), {"id": "erase", "type": "sink.erasure", "dependsOn": ["src"]}
    )
    await stub.StartRun(
        flow_pb2.StartRunRequest(definition=strict, run_id="h1"), metadata=metadata(tenant, "admin")
    )
    failed = await wait_finished(stub, tenant, "h1")
    assert failed.state == flow_pb2.RUN_STATE_FAILED
    assert [n.error for n in failed.nodes if n.node_id == "erase"] == ["subject 0: legal_hold"]
    assert await _rows(db, tenant) == {"c1": 1, "c2": 1}

    lenient = definition(
        subjects("c1", "c2"),
        {
            "id": "erase",
            "type": "sink.erasure",
            "dependsOn": ["src"],
            "config": {"on_legal_hold": "skip"},
        },
    )
    await stub.RetryRun(
        flow_pb2.RetryRunRequest(run_id="h1", definition=lenient),
        metadata=metadata(tenant, "admin"),
    )
    done = await wait_finished(stub, tenant, "h1")
    assert node_states(done) == {"src": "SKIPPED", "erase": "COMPLETED"}
    assert await _rows(db, tenant) == {"c1": 1}
    output = await _output(db, tenant, "h1", "erase")
    assert output["erased"] == 1 and output["heldSkipped"] == 1
