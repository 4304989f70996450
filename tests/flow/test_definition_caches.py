"""StartRun converts, digests and validates a definition once, not per run.

The service keeps recent request definitions converted, by tenant and wire
bytes (the same frozen FlowDefinition comes back, its digest computed once),
and the run manager keeps validated plans by tenant and digest. What must not
be cached: a definition that does not convert or validate (refused every time,
writing nothing), the role check (per caller, every call), and anything one
tenant could find by timing in another's entries.
"""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import json_format

from kaireon.flow.v1 import flow_pb2, flow_pb2_grpc
from kaireon_server.flow import convert
from kaireon_server.flow.definition import FlowDefinition, NodeSpec, definition_from_json
from kaireon_server.platform.auth import Identity
from kaireon_server.platform.auth.identity import Role
from kaireon_server.platform.db import Database
from kaireon_server.platform.errors import InvalidArgument, PermissionDenied
from tests.flow.support import definition, run_manager
from tests.flow.test_round_trips import CHAIN
from tests.support.server import metadata

ERASING = {
    "name": "erase",
    "nodes": [
        {"id": "src", "type": "source.inline", "config": {"records": [{"customer_id": "c1"}]}},
        {"id": "erase", "type": "sink.erasure", "config": {}, "dependsOn": ["src"]},
    ],
}


TENANT = "t-plans"


def _message(document: dict[str, object]) -> flow_pb2.FlowDefinition:
    return json_format.ParseDict(document, flow_pb2.FlowDefinition())


def test_equal_messages_give_the_same_converted_definition() -> None:
    definitions = convert.RequestDefinitions()
    first = definitions.get(TENANT, _message(CHAIN))
    again = definitions.get(TENANT, _message(CHAIN))
    assert again is first
    assert first.definition == convert.definition_from_proto(_message(CHAIN))
    # The reply's definition is what run_to_proto makes of the stored form.
    assert first.stored == convert._definition(json_format.MessageToDict(first.stored))
    other = definitions.get(TENANT, _message({**CHAIN, "name": "other"}))
    assert other is not first and other.definition.name == "other"


def test_a_definition_that_does_not_convert_is_refused_every_time() -> None:
    definitions = convert.RequestDefinitions()
    bad = _message(CHAIN)
    bad.nodes[0].config["n"] = float("nan")  # no JSON form
    for _ in range(2):
        with pytest.raises(InvalidArgument):
            definitions.get(TENANT, bad)


def test_over_its_bound_the_cache_keeps_nothing_rather_than_everything() -> None:
    definitions = convert.RequestDefinitions(max_bytes=100)
    first = definitions.get(TENANT, _message(CHAIN))
    assert definitions.get(TENANT, _message(CHAIN)) is not first  # larger than the whole cache


def test_converted_definitions_are_kept_per_tenant() -> None:
    definitions = convert.RequestDefinitions()
    mine = definitions.get(TENANT, _message(CHAIN))
    theirs = definitions.get(f"{TENANT}-other", _message(CHAIN))
    assert theirs is not mine and theirs.definition == mine.definition
    assert definitions.get(TENANT, _message(CHAIN)) is mine


async def test_plans_are_kept_by_digest_and_the_role_is_checked_every_call(
    db: Database, database_url: str
) -> None:
    manager = run_manager(db, database_url)
    admin = Identity(TENANT, Role.ADMIN, "admin")
    operator = Identity(TENANT, Role.OPERATOR, "operator")
    chain = definition_from_json(CHAIN)
    assert manager.plan(definition_from_json(CHAIN), admin) is manager.plan(chain, operator)

    erasing = definition_from_json(ERASING)
    assert manager.plan(erasing, admin).definition == erasing
    with pytest.raises(PermissionDenied):
        manager.plan(erasing, operator)

    elsewhere = Identity(f"{TENANT}-other", Role.ADMIN, "admin")
    assert manager.plan(chain, elsewhere) is not manager.plan(chain, admin)
    assert manager.plan(chain, elsewhere) is manager.plan(definition_from_json(CHAIN), elsewhere)


async def test_a_definition_equal_in_digest_only_is_validated_again(
    db: Database, database_url: str
) -> None:
    """The JSON form (hence the digest) maps a timeout of None and 0 alike; a 0
    built in code is refused although the None one's plan is kept."""
    manager = run_manager(db, database_url)
    admin = Identity(TENANT, Role.ADMIN, "admin")
    default = FlowDefinition(nodes=(NodeSpec("a", "source.inline", {"records": []}),))
    zero = FlowDefinition(
        nodes=(NodeSpec("a", "source.inline", {"records": []}, timeout_seconds=0),)
    )
    assert default.digest == zero.digest
    manager.plan(default, admin)
    with pytest.raises(InvalidArgument):
        manager.plan(zero, admin)


async def test_through_the_service_the_cache_refuses_what_it_refused_and_checks_every_caller(
    channel: grpc.aio.Channel, db: Database, tenant: str
) -> None:
    """Over gRPC: the same bad definition is refused twice (and writes nothing),
    and once an admin's start of an admin-only node type is kept, an operator
    sending the same bytes is still refused."""
    stub = flow_pb2_grpc.FlowRunnerServiceStub(channel)
    bad = definition({"id": "a", "type": "transform.filter", "config": {"where": "x >"}})
    for _ in range(2):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.StartRun(
                flow_pb2.StartRunRequest(definition=bad), metadata=metadata(tenant, "admin")
            )
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    dry = {
        **ERASING,
        "nodes": [ERASING["nodes"][0], {**ERASING["nodes"][1], "config": {"dry_run": True}}],
    }
    await stub.StartRun(
        flow_pb2.StartRunRequest(definition=_message(dry), run_id="by-admin"),
        metadata=metadata(tenant, "admin"),
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.StartRun(
            flow_pb2.StartRunRequest(definition=_message(dry), run_id="by-operator"),
            metadata=metadata(tenant, "operator"),
        )
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    async with db.transaction(tenant, readonly=True) as con:
        runs = await con.fetch("SELECT run_id FROM flow_run WHERE tenant_id = $1", tenant)
    assert [r["run_id"] for r in runs] == ["by-admin"]
