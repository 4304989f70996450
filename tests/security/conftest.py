"""Security fixtures: a populated tenant with one object of every kind, owner-side snapshots.

`populate()` gives a tenant seeded demo data plus everything the RPCs act on:
a completed DSAR export (with an idempotency key), a legal hold, a finished
flow run with checkpoints, a provenance emission and the audit rows of all of
them. Every marker it plants is random per session, so a marker found in
another tenant's answer can only have come from this tenant.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import grpc
import pytest
from google.protobuf import json_format

from kaireon.audit.v1 import audit_pb2, audit_pb2_grpc
from kaireon.dsar.v1 import dsar_pb2, dsar_pb2_grpc
from kaireon.erasure.v1 import erasure_pb2, erasure_pb2_grpc
from kaireon.flow.v1 import flow_pb2, flow_pb2_grpc
from kaireon.provenance.v1 import provenance_pb2, provenance_pb2_grpc
from kaireon.requests.v1 import requests_pb2, requests_pb2_grpc
from kaireon_server.demo.seed import SeedSize, seed_tenant
from kaireon_server.platform.db import Database
from tests.security.snapshot import Snapshotter
from tests.support.server import metadata

FINISHED_RUN = {
    flow_pb2.RUN_STATE_SUCCEEDED,
    flow_pb2.RUN_STATE_FAILED,
    flow_pb2.RUN_STATE_CANCELLED,
}


@dataclass
class World:
    """One tenant's objects: the identifiers other tenants will try, and its secrets."""

    tenant: str
    marker: str
    customer: str = "cust_00001"
    held_customer: str = "cust_00002"
    decision: str = "dec_00001_1"
    dsar_id: str = ""
    idempotency_key: str = ""
    run_id: str = ""
    hold_reason: str = ""
    audit_page_token: str = ""
    subject_request_id: str = ""
    processor_name: str = ""
    processor_id: str = ""
    secrets: set[str] = field(default_factory=set)


def new_tenant(prefix: str = "t") -> str:
    return f"{prefix}{secrets.token_hex(5)}"


def flow_definition(marker: str, **extra: Any) -> flow_pb2.FlowDefinition:
    """Two nodes whose checkpointed outputs carry the marker."""
    doc = {
        "name": f"flow-{marker}",
        "nodes": [
            {
                "id": "records",
                "type": "source.inline",
                "config": {"records": [{"secret": f"record-{marker}", "n": 1}]},
            },
            {
                "id": "kept",
                "type": "transform.filter",
                "dependsOn": ["records"],
                "config": {"where": "n >= 1"},
            },
        ],
        **extra,
    }
    return json_format.ParseDict(doc, flow_pb2.FlowDefinition())


async def wait_run(channel: grpc.aio.Channel, tenant: str, run_id: str) -> flow_pb2.Run:
    stub = flow_pb2_grpc.FlowRunnerServiceStub(channel)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while True:
        reply = await stub.GetRun(flow_pb2.GetRunRequest(run_id=run_id), metadata=metadata(tenant))
        if reply.run.state in FINISHED_RUN:
            return reply.run
        assert loop.time() < deadline, f"run still {reply.run.state}"
        await asyncio.sleep(0.05)


async def wait_dsar(
    channel: grpc.aio.Channel, tenant: str, request_id: str
) -> dsar_pb2.DsarRequest:
    stub = dsar_pb2_grpc.DsarServiceStub(channel)
    last = None
    async for item in stub.WatchDsarRequest(
        dsar_pb2.WatchDsarRequestRequest(id=request_id), metadata=metadata(tenant), timeout=60
    ):
        last = item.request
    assert last is not None and last.status in ("completed", "failed")
    return last


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


async def tenant_secrets(con: asyncpg.Connection, tenant: str) -> set[str]:
    """Values only this tenant's rows hold: ids, hashes, digests and the seed's planted PII."""
    found: set[str] = set()
    for sql in (
        "SELECT id::text AS v FROM audit_log WHERE tenant_id = $1",
        "SELECT integrity_hash AS v FROM audit_log WHERE tenant_id = $1",
        "SELECT id::text AS v FROM dsar_request WHERE tenant_id = $1",
        "SELECT export_digest AS v FROM dsar_request WHERE tenant_id = $1",
        "SELECT reason AS v FROM legal_hold WHERE tenant_id = $1",
        "SELECT id::text AS v FROM subject_request WHERE tenant_id = $1",
        "SELECT signing_secret AS v FROM processor_recipient WHERE tenant_id = $1",
        "SELECT id::text AS v FROM processor_recipient WHERE tenant_id = $1",
        "SELECT definition_digest AS v FROM flow_run WHERE tenant_id = $1",
        "SELECT output_digest AS v FROM flow_run_checkpoint WHERE tenant_id = $1",
        "SELECT cache_key AS v FROM flow_run_checkpoint WHERE tenant_id = $1",
    ):
        found.update(r["v"] for r in await con.fetch(sql, tenant) if r["v"])
    for row in await con.fetch(
        "SELECT attributes::text AS a FROM decision_trace WHERE tenant_id = $1", tenant
    ):
        found.update(s for s in _strings(json.loads(row["a"])) if "@" in s or " " in s)
    return {s for s in found if len(s) >= 8}


async def populate(channel: grpc.aio.Channel, db: Database, dsn: str, tenant: str) -> World:
    """Seeds `tenant` and creates one object of every kind through the real RPCs."""
    world = World(tenant=tenant, marker=secrets.token_hex(6))
    await seed_tenant(db, tenant, SeedSize(customers=3, interactions_per_customer=3))
    md = metadata(tenant, "admin")

    dsar = dsar_pb2_grpc.DsarServiceStub(channel)
    world.idempotency_key = f"idem-{world.marker}"
    created = await dsar.CreateDsarRequest(
        dsar_pb2.CreateDsarRequestRequest(
            request_type="export", subject_id=world.customer, idempotency_key=world.idempotency_key
        ),
        metadata=md,
    )
    world.dsar_id = created.request.id
    done = await wait_dsar(channel, tenant, world.dsar_id)
    assert done.status == "completed", done.error

    world.hold_reason = f"case-{world.marker}"
    await erasure_pb2_grpc.ErasureServiceStub(channel).SetLegalHold(
        erasure_pb2.SetLegalHoldRequest(customer_id=world.held_customer, reason=world.hold_reason),
        metadata=md,
    )

    # A lifecycle request of A's, verified and waiting for approval.
    lifecycle = requests_pb2_grpc.RequestServiceStub(channel)
    received = await lifecycle.CreateRequest(
        requests_pb2.CreateRequestRequest(
            kind="erasure", subject_id=world.customer, regulation="gdpr"
        ),
        metadata=md,
    )
    world.subject_request_id = received.request.id
    await lifecycle.VerifyIdentity(
        requests_pb2.VerifyIdentityRequest(
            id=world.subject_request_id,
            method="email_link",
            evidence_reference=f"ticket-{world.marker}",
            result=requests_pb2.VERIFICATION_RESULT_VERIFIED,
        ),
        metadata=md,
    )

    world.processor_name = f"processor-{world.marker}"
    registered = await lifecycle.RegisterProcessor(
        requests_pb2.RegisterProcessorRequest(
            name=world.processor_name, url=f"http://127.0.0.1:9/{world.marker}"
        ),
        metadata=md,
    )
    world.processor_id = registered.processor.id

    flow = flow_pb2_grpc.FlowRunnerServiceStub(channel)
    world.run_id = f"run-{world.marker}"
    await flow.StartRun(
        flow_pb2.StartRunRequest(definition=flow_definition(world.marker), run_id=world.run_id),
        metadata=md,
    )
    run = await wait_run(channel, tenant, world.run_id)
    assert run.state == flow_pb2.RUN_STATE_SUCCEEDED, run.error

    await provenance_pb2_grpc.ProvenanceServiceStub(channel).GetDecisionProvenance(
        provenance_pb2.GetDecisionProvenanceRequest(decision_id=world.decision), metadata=md
    )
    page = await audit_pb2_grpc.AuditServiceStub(channel).ListAuditEvents(
        audit_pb2.ListAuditEventsRequest(page_size=2), metadata=md
    )
    world.audit_page_token = page.next_page_token
    assert world.audit_page_token

    con = await asyncpg.connect(dsn)
    try:
        world.secrets = await tenant_secrets(con, tenant)
    finally:
        await con.close()
    world.secrets |= {
        f"record-{world.marker}",
        f"flow-{world.marker}",
        world.hold_reason,
        f"ticket-{world.marker}",
    }
    return world


@pytest.fixture(scope="module")
async def snapshots(database_url: str, app: Any) -> AsyncIterator[Snapshotter]:
    snapshotter = await Snapshotter.open(database_url)
    yield snapshotter
    await snapshotter.close()
