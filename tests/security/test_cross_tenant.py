"""Tenant B, with a high enough role, uses tenant A's identifiers on every RPC.

One table (CASES) says, per RPC, what B sends (A's DSAR id, A's run id, A's
customers, A's decision, A's page token, A's idempotency key...) and what the
documented answer is: NOT_FOUND, or B's own (empty or B-only) data. Each case
then proves:

- nothing read: no response, error message or trailer carries any of A's
  values (audit ids and hashes, DSAR ids and digests, the hold reason, flow
  digests and planted records, the seed's PII);
- nothing changed for A: every tenant table's row count and content digest
  and A's audit chain head are identical before and after (read with the
  owner connection);
- B gets no stray rows: only the tables the RPC documents writing change for B.

The RPC list comes from the generated descriptors, so a new RPC without a
case fails here. The same table runs over gRPC (trusted headers, and a bearer
token for B with A's tenant spoofed in the headers) and through the REST adapter.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

import aiohttp
import asyncpg
import grpc
import pytest
from google.protobuf import json_format, text_format
from google.protobuf.message import Message

from kaireon.audit.v1 import audit_pb2
from kaireon.dsar.v1 import dsar_pb2
from kaireon.erasure.v1 import erasure_pb2
from kaireon.flow.v1 import flow_pb2
from kaireon.provenance.v1 import provenance_pb2
from kaireon.requests.v1 import requests_pb2
from kaireon_server.app import App
from kaireon_server.platform.db import Database
from tests.security.conftest import World, new_tenant, populate, wait_dsar, wait_run
from tests.security.rest import to_http
from tests.security.rpcs import BY_NAME, METHOD_NAMES, Outcome, call, response_class
from tests.security.snapshot import Snapshot, Snapshotter
from tests.security.valid_requests import REQUESTS
from tests.support.server import bearer, metadata

AUDIT = frozenset({"audit_log", "audit_chain_head"})
# A direct export or erasure is also a request of the lifecycle (subject_request).
DSAR_TABLES = (
    frozenset({"dsar_request", "dsar_request_event", "dsar_export_chunk", "subject_request"})
    | AUDIT
)
FLOW_TABLES = (
    frozenset({"flow_run", "flow_run_node", "flow_run_event", "flow_run_checkpoint"}) | AUDIT
)
B_OWN_CUSTOMER = "cust_b_own"


@dataclass
class Ctx:
    """What a case's extra check may look at."""

    world: World
    b: str
    outcome: Outcome
    b_before: Snapshot
    b_after: Snapshot
    a_after: Snapshot
    channel: grpc.aio.Channel
    owner: asyncpg.Connection


Check = Callable[[Ctx], Awaitable[None]]


@dataclass(frozen=True)
class Case:
    ok: bool  # False: NOT_FOUND
    b_writes: frozenset[str] = frozenset()
    check: Check | None = None


def _only_b(items: list[Any], b: str, attr: str = "tenant_id") -> None:
    assert all(getattr(i, attr) == b for i in items), items


async def _check_audit_list(ctx: Ctx) -> None:
    (reply,) = ctx.outcome.responses
    assert isinstance(reply, audit_pb2.ListAuditEventsResponse)
    _only_b(list(reply.events), ctx.b)
    assert len(reply.events) == ctx.b_before.rows("audit_log") >= 1


async def _check_verify(ctx: Ctx) -> None:
    (reply,) = ctx.outcome.responses
    assert isinstance(reply, audit_pb2.VerifyChainResponse)
    assert reply.valid and reply.rows_checked == ctx.b_before.rows("audit_log")
    assert ctx.b_before.chain_head is not None and ctx.a_after.chain_head is not None
    assert reply.head_hash == ctx.b_before.chain_head[1] != ctx.a_after.chain_head[1]


async def _check_checkpoint(ctx: Ctx) -> None:
    (reply,) = ctx.outcome.responses
    assert isinstance(reply, audit_pb2.GetCheckpointResponse)
    assert reply.checkpoint.origin.endswith(f"/audit/{ctx.b}")


async def _check_log_verified(ctx: Ctx) -> None:
    *_, reply = ctx.outcome.responses
    result = reply.result if isinstance(reply, audit_pb2.StreamVerifyLogResponse) else reply
    assert isinstance(result, audit_pb2.VerifyLogResponse)
    assert result.valid and result.tree_size <= ctx.b_before.rows("audit_log")


async def _check_dsar_create(ctx: Ctx) -> None:
    (reply,) = ctx.outcome.responses
    assert isinstance(reply, dsar_pb2.CreateDsarRequestResponse)
    assert reply.request.id != ctx.world.dsar_id and reply.request.status == "pending"
    # B's export of the same subject id was run by the worker: B has no rows for it.
    assert (await wait_dsar(ctx.channel, ctx.b, reply.request.id)).status == "completed"
    got = await call(
        ctx.channel,
        BY_NAME["DsarService.GetDsarRequest"],
        dsar_pb2.GetDsarRequestRequest(id=reply.request.id),
        metadata(ctx.b, "operator"),
    )
    (fetched,) = got.responses
    assert isinstance(fetched, dsar_pb2.GetDsarRequestResponse)
    done = fetched.request
    assert done.exported_data.customer_id == ctx.world.customer
    assert dict(done.exported_data.counts) and not any(done.exported_data.counts.values())
    text = text_format.MessageToString(done)
    assert not [s for s in ctx.world.secrets if s in text]


def _empty(field_name: str) -> Check:
    async def check(ctx: Ctx) -> None:
        (reply,) = ctx.outcome.responses
        assert list(getattr(reply, field_name)) == []

    return check


async def _check_erase(ctx: Ctx) -> None:
    (reply,) = ctx.outcome.responses
    assert isinstance(reply, erasure_pb2.EraseCustomerResponse)
    assert reply.success and reply.total_deleted == 0 and reply.receipt.digest_sha256
    # B's erasure wrote exactly its own audit row.
    assert ctx.b_after.rows("audit_log") == ctx.b_before.rows("audit_log") + 1


async def _check_set_hold(ctx: Ctx) -> None:
    (reply,) = ctx.outcome.responses
    assert isinstance(reply, erasure_pb2.SetLegalHoldResponse)
    assert reply.legal_hold.customer_id == ctx.world.held_customer
    assert reply.legal_hold.reason != ctx.world.hold_reason
    assert ctx.b_after.rows("legal_hold") == ctx.b_before.rows("legal_hold") + 1


async def _check_list_holds(ctx: Ctx) -> None:
    (reply,) = ctx.outcome.responses
    assert isinstance(reply, erasure_pb2.ListLegalHoldsResponse)
    assert [h.customer_id for h in reply.legal_holds] == [B_OWN_CUSTOMER]


async def _check_start_run(ctx: Ctx) -> None:
    (reply,) = ctx.outcome.responses
    assert isinstance(reply, flow_pb2.StartRunResponse)
    assert reply.run.run_id == ctx.world.run_id  # B's own run under the same id
    run = await wait_run(ctx.channel, ctx.b, ctx.world.run_id)
    assert run.state == flow_pb2.RUN_STATE_SUCCEEDED, run.error
    # The SQL source read the platform tables as B: none of A's rows.
    output = await ctx.owner.fetchval(
        "SELECT output::text FROM flow_run_checkpoint WHERE tenant_id = $1 AND run_id = $2 "
        "AND node_id = 'read'",
        ctx.b,
        ctx.world.run_id,
    )
    assert output == "[]"
    assert ctx.a_after.rows("interaction_history") > 0  # A does have rows it could have read


async def _check_signing_key(ctx: Ctx) -> None:
    (reply,) = ctx.outcome.responses
    assert isinstance(reply, provenance_pb2.GetSigningKeyResponse)
    assert reply.public_key_pem and reply.key_id


async def _check_request_create(ctx: Ctx) -> None:
    (reply,) = ctx.outcome.responses
    assert isinstance(reply, requests_pb2.CreateRequestResponse)
    assert reply.request.id != ctx.world.subject_request_id
    assert reply.request.state == "received"
    assert ctx.b_after.rows("subject_request") == ctx.b_before.rows("subject_request") + 1


async def _check_policy_set(ctx: Ctx) -> None:
    (reply,) = ctx.outcome.responses
    assert isinstance(reply, requests_pb2.SetRequestPolicyResponse)
    assert reply.policy.overridden
    assert ctx.b_after.rows("subject_request_policy") == 1


async def _check_policies(ctx: Ctx) -> None:
    (reply,) = ctx.outcome.responses
    assert isinstance(reply, requests_pb2.ListRequestPoliciesResponse)
    # A overrides none either; B sees the four defaults.
    assert [p.overridden for p in reply.policies] == [False] * 4


async def _check_register_processor(ctx: Ctx) -> None:
    (reply,) = ctx.outcome.responses
    assert isinstance(reply, requests_pb2.RegisterProcessorResponse)
    assert reply.processor.name == ctx.world.processor_name
    assert ctx.b_after.rows("processor_recipient") == 1


async def _check_stream_not_found(ctx: Ctx) -> None:
    # A's decision, asked by B: one not_found message, no bundle, nothing audited.
    (reply,) = ctx.outcome.responses
    assert isinstance(reply, provenance_pb2.StreamDecisionProvenanceResponse)
    assert reply.not_found and not reply.bundle.data and not reply.audit_event_id


# Per RPC: the documented answer to B, the tables B's own rows may change in,
# and what else to check. The request is REQUESTS[name] (A's identifiers).
CASES: dict[str, Case] = {
    "AuditService.ListAuditEvents": Case(ok=True, check=_check_audit_list),
    # Records where B's next (incremental) check resumes.
    "AuditService.VerifyChain": Case(
        ok=True, b_writes=frozenset({"audit_chain_verified"}), check=_check_verify
    ),
    # B's own log, or NOT_FOUND for A's tree sizes B's log does not have.
    "AuditService.GetCheckpoint": Case(ok=True, check=_check_checkpoint),
    "AuditService.GetInclusionProof": Case(ok=False),
    "AuditService.GetConsistencyProof": Case(ok=False),
    "AuditService.ListEntries": Case(ok=False),
    "AuditService.AddCosignature": Case(ok=False),
    # Two entries: a bundle A has, not the fresh tenant B (one row).
    "AuditService.GetLogResource": Case(ok=False),
    "AuditService.VerifyLog": Case(
        ok=True, b_writes=frozenset({"audit_tlog_verified"}), check=_check_log_verified
    ),
    "AuditService.StreamVerifyLog": Case(
        ok=True, b_writes=frozenset({"audit_tlog_verified"}), check=_check_log_verified
    ),
    "DsarService.CreateDsarRequest": Case(ok=True, b_writes=DSAR_TABLES, check=_check_dsar_create),
    "DsarService.GetDsarRequest": Case(ok=False),
    "DsarService.ListDsarRequests": Case(ok=True, check=_empty("requests")),
    "DsarService.WatchDsarRequest": Case(ok=False),
    "DsarService.StreamDsarExport": Case(ok=False),
    "ErasureService.EraseCustomer": Case(
        ok=True, b_writes=AUDIT | {"subject_request"}, check=_check_erase
    ),
    # A already holds this customer: B must not learn that (no ALREADY_EXISTS).
    "ErasureService.SetLegalHold": Case(
        ok=True, b_writes=AUDIT | {"legal_hold"}, check=_check_set_hold
    ),
    "ErasureService.ReleaseLegalHold": Case(ok=False),
    "ErasureService.ListLegalHolds": Case(ok=True, check=_check_list_holds),
    # B's own run under A's run id (ids are per tenant), whose SQL source reads as B.
    "FlowRunnerService.StartRun": Case(ok=True, b_writes=FLOW_TABLES, check=_check_start_run),
    "FlowRunnerService.RetryRun": Case(ok=False),
    "FlowRunnerService.GetRun": Case(ok=False),
    "FlowRunnerService.ListRuns": Case(ok=True, check=_empty("runs")),
    "FlowRunnerService.ClearCheckpoints": Case(ok=False),
    "FlowRunnerService.CancelRun": Case(ok=False),
    "FlowRunnerService.WatchRun": Case(ok=False),
    "FlowRunnerService.GetNodeOutput": Case(ok=False),
    "ProvenanceService.GetDecisionProvenance": Case(ok=False),
    "ProvenanceService.GetSigningKey": Case(ok=True, check=_check_signing_key),
    "ProvenanceService.StreamDecisionProvenance": Case(ok=True, check=_check_stream_not_found),
    # B's own new request about the same customer id.
    "RequestService.CreateRequest": Case(
        ok=True, b_writes=AUDIT | {"subject_request"}, check=_check_request_create
    ),
    "RequestService.GetRequest": Case(ok=False),
    "RequestService.ListRequests": Case(ok=True, check=_empty("requests")),
    "RequestService.VerifyIdentity": Case(ok=False),
    "RequestService.ApproveRequest": Case(ok=False),
    "RequestService.DenyRequest": Case(ok=False),
    "RequestService.ExtendRequest": Case(ok=False),
    "RequestService.PauseRequest": Case(ok=False),
    "RequestService.ResumeRequest": Case(ok=False),
    "RequestService.CancelRequest": Case(ok=False),
    "RequestService.SetRequestPolicy": Case(
        ok=True, b_writes=AUDIT | {"subject_request_policy"}, check=_check_policy_set
    ),
    "RequestService.ListRequestPolicies": Case(ok=True, check=_check_policies),
    "RequestService.RegisterProcessor": Case(
        ok=True, b_writes=AUDIT | {"processor_recipient"}, check=_check_register_processor
    ),
    "RequestService.ListProcessors": Case(ok=True, check=_empty("processors")),
    "RequestService.WaiveDelivery": Case(ok=False),
    # A's processor id: B has no such processor (nothing sent, nothing audited).
    "RequestService.TestProcessor": Case(ok=False),
}


def test_every_rpc_has_a_cross_tenant_case() -> None:
    assert len(METHOD_NAMES) == 46
    assert sorted(CASES) == sorted(REQUESTS) == sorted(METHOD_NAMES)


@pytest.fixture(scope="module")
async def world(channel: grpc.aio.Channel, db: Database, database_url: str) -> World:
    return await populate(channel, db, database_url, new_tenant("a"))


@pytest.fixture(scope="module")
async def owner(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    con = await asyncpg.connect(database_url)
    yield con
    await con.close()


@pytest.fixture
async def tenant_b(channel: grpc.aio.Channel, snapshots: Snapshotter, world: World) -> str:
    """A fresh tenant B per case (its background work cannot blur another case), with one
    object of its own so that its lists are not trivially empty."""
    b = new_tenant("b")
    await call(
        channel,
        BY_NAME["ErasureService.SetLegalHold"],
        erasure_pb2.SetLegalHoldRequest(customer_id=B_OWN_CUSTOMER, reason="case-b-own"),
        metadata(b, "admin"),
    )
    await snapshots.refresh()  # the seed of A created ds_* tables
    return b


def _request_strings(message: Message) -> set[str]:
    return {line for line in text_format.MessageToString(message).split('"') if line}


def leaked(world: World, request: Message, texts: list[str]) -> list[str]:
    forbidden = world.secrets - {
        s for s in world.secrets if any(s in r for r in _request_strings(request))
    }
    assert len(forbidden) >= 20, "too few of A's values to look for"
    return sorted(s for s in forbidden for t in texts if s in t)


def outcome_texts(outcome: Outcome) -> list[str]:
    texts = [text_format.MessageToString(r) for r in outcome.responses]
    texts += [r.SerializeToString().decode("utf-8", "replace") for r in outcome.responses]
    texts.append(outcome.details)
    for _, value in outcome.trailing:
        texts.append(value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value))
    return texts


async def _finish(
    case: Case,
    world: World,
    b: str,
    outcome: Outcome,
    a_before: Snapshot,
    b_before: Snapshot,
    snapshots: Snapshotter,
    channel: grpc.aio.Channel,
    owner: asyncpg.Connection,
) -> None:
    if case.check is not None and outcome.ok:
        a_after = await snapshots.take(world.tenant)
        b_after = await snapshots.take(b)
        await case.check(Ctx(world, b, outcome, b_before, b_after, a_after, channel, owner))
    # B's own background work (an export job, a run) has finished; it reached nothing of A.
    await snapshots.wait_idle(b)
    a_after = await snapshots.take(world.tenant)
    b_after = await snapshots.take(b)
    assert a_after == a_before, a_before.changed_tables(a_after)
    assert b_before.changed_tables(b_after) <= case.b_writes


IDENTITIES = ["headers", "jwt", "jwt_with_spoofed_tenant_header"]


def b_identity(kind: str, b: str, a: str) -> tuple[tuple[str, str], ...]:
    if kind == "headers":
        return metadata(b, "admin")
    if kind == "jwt":
        return bearer(b, "admin")
    # Two identity sources in one call (a token and A's id in x-tenant-id): refused.
    return (*bearer(b, "admin"), ("x-tenant-id", a), ("x-user-role", "admin"))


# Every RPC x every identity, a database snapshot per call: slow tier (the fast
# tier keeps the REST sweep below, one call per RPC).
@pytest.mark.slow
@pytest.mark.parametrize("identity", IDENTITIES)
@pytest.mark.parametrize("name", METHOD_NAMES)
async def test_grpc_other_tenant_reads_nothing_and_changes_nothing(
    name: str,
    identity: str,
    world: World,
    tenant_b: str,
    channel: grpc.aio.Channel,
    snapshots: Snapshotter,
    owner: asyncpg.Connection,
) -> None:
    case = CASES[name]
    request = REQUESTS[name](world)
    a_before, b_before = await snapshots.take(world.tenant), await snapshots.take(tenant_b)
    outcome = await call(
        channel, BY_NAME[name], request, b_identity(identity, tenant_b, world.tenant)
    )
    expected = grpc.StatusCode.OK if case.ok else grpc.StatusCode.NOT_FOUND
    if identity == "jwt_with_spoofed_tenant_header":
        expected = grpc.StatusCode.UNAUTHENTICATED
    assert outcome.code is expected, (outcome.code, outcome.details)
    assert not leaked(world, request, outcome_texts(outcome))
    await _finish(case, world, tenant_b, outcome, a_before, b_before, snapshots, channel, owner)


@pytest.fixture(scope="module")
async def http(app: App) -> AsyncIterator[tuple[aiohttp.ClientSession, str]]:
    async with aiohttp.ClientSession() as session:
        yield session, f"http://127.0.0.1:{app.http_port}"


@pytest.mark.parametrize("name", METHOD_NAMES)
async def test_rest_other_tenant_reads_nothing_and_changes_nothing(
    name: str,
    world: World,
    tenant_b: str,
    http: tuple[aiohttp.ClientSession, str],
    channel: grpc.aio.Channel,
    snapshots: Snapshotter,
    owner: asyncpg.Connection,
) -> None:
    session, base = http
    case = CASES[name]
    request = REQUESTS[name](world)
    spec = to_http(BY_NAME[name], request)
    headers = {"X-Tenant-Id": tenant_b, "X-User-Role": "admin", "Content-Type": "application/json"}
    a_before, b_before = await snapshots.take(world.tenant), await snapshots.take(tenant_b)
    async with session.request(
        spec.method, base + spec.path, params=spec.query, data=spec.body, headers=headers
    ) as response:
        status, body = response.status, await response.read()
        header_text = "\n".join(f"{k}: {v}" for k, v in response.headers.items())
    assert status == (200 if case.ok else 404), body[:500]
    assert not leaked(world, request, [body.decode("utf-8", "replace"), header_text])
    method = BY_NAME[name]
    outcome = Outcome(grpc.StatusCode.NOT_FOUND)
    if case.ok and method.server_streaming:
        # A stream of B's own (StreamVerifyLog): its content is checked by the gRPC sweep.
        outcome = Outcome(grpc.StatusCode.OK, [])
        case = replace(case, check=None)
    elif case.ok:
        # Every other OK case is a unary call answered with the whole message as JSON.
        reply = json_format.Parse(body, response_class(method)(), ignore_unknown_fields=True)
        outcome = Outcome(grpc.StatusCode.OK, [reply])
    await _finish(case, world, tenant_b, outcome, a_before, b_before, snapshots, channel, owner)


# Positive control: with A's own identity the same requests do return A's values, so
# the scan above would have seen a leak had there been one.
CONTROL = [
    "AuditService.ListAuditEvents",
    "DsarService.GetDsarRequest",
    "DsarService.ListDsarRequests",
    "DsarService.StreamDsarExport",
    "DsarService.WatchDsarRequest",
    "ErasureService.ListLegalHolds",
    "FlowRunnerService.GetRun",
    "FlowRunnerService.ListRuns",
    "FlowRunnerService.WatchRun",
    "FlowRunnerService.GetNodeOutput",
]


@pytest.mark.parametrize("name", CONTROL)
async def test_control_the_owner_tenant_does_see_its_values(
    name: str, world: World, channel: grpc.aio.Channel
) -> None:
    request = REQUESTS[name](world)
    outcome = await call(channel, BY_NAME[name], request, metadata(world.tenant, "admin"))
    assert outcome.ok, outcome.details
    assert leaked(world, request, outcome_texts(outcome))
