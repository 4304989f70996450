"""StartRun converts, digests and validates a definition once, not per run.

The service keeps recent request definitions converted, by their wire bytes
(the same frozen FlowDefinition comes back, its digest computed once), and the
run manager keeps validated plans by digest. What must not be cached: a
definition that does not convert or validate (refused every time), and the
role check (per caller, every call).
"""

from __future__ import annotations

import pytest
from google.protobuf import json_format

from kaireon.flow.v1 import flow_pb2
from kaireon_server.flow import convert
from kaireon_server.flow.definition import FlowDefinition, NodeSpec, definition_from_json
from kaireon_server.platform.auth import Identity
from kaireon_server.platform.auth.identity import Role
from kaireon_server.platform.db import Database
from kaireon_server.platform.errors import InvalidArgument, PermissionDenied
from tests.flow.support import run_manager
from tests.flow.test_round_trips import CHAIN

ERASING = {
    "name": "erase",
    "nodes": [
        {"id": "src", "type": "source.inline", "config": {"records": [{"customer_id": "c1"}]}},
        {"id": "erase", "type": "sink.erasure", "config": {}, "dependsOn": ["src"]},
    ],
}


def _message(document: dict[str, object]) -> flow_pb2.FlowDefinition:
    return json_format.ParseDict(document, flow_pb2.FlowDefinition())


def test_equal_messages_give_the_same_converted_definition() -> None:
    definitions = convert.RequestDefinitions()
    first = definitions.get(_message(CHAIN))
    again = definitions.get(_message(CHAIN))
    assert again is first
    assert first.definition == convert.definition_from_proto(_message(CHAIN))
    # The reply's definition is what run_to_proto makes of the stored form.
    assert first.stored == convert._definition(json_format.MessageToDict(first.stored))
    other = definitions.get(_message({**CHAIN, "name": "other"}))
    assert other is not first and other.definition.name == "other"


def test_a_definition_that_does_not_convert_is_refused_every_time() -> None:
    definitions = convert.RequestDefinitions()
    bad = _message(CHAIN)
    bad.nodes[0].config["n"] = float("nan")  # no JSON form
    for _ in range(2):
        with pytest.raises(InvalidArgument):
            definitions.get(bad)


def test_over_its_bound_the_cache_keeps_nothing_rather_than_everything() -> None:
    definitions = convert.RequestDefinitions(max_bytes=100)
    first = definitions.get(_message(CHAIN))
    assert definitions.get(_message(CHAIN)) is not first  # larger than the whole cache


async def test_plans_are_kept_by_digest_and_the_role_is_checked_every_call(
    db: Database, database_url: str
) -> None:
    manager = run_manager(db, database_url)
    admin = Identity("t-plans", Role.ADMIN, "admin")
    operator = Identity("t-plans", Role.OPERATOR, "operator")
    chain = definition_from_json(CHAIN)
    assert manager.plan(definition_from_json(CHAIN), admin) is manager.plan(chain, operator)

    erasing = definition_from_json(ERASING)
    assert manager.plan(erasing, admin).definition == erasing
    with pytest.raises(PermissionDenied):
        manager.plan(erasing, operator)


async def test_a_definition_equal_in_digest_only_is_validated_again(
    db: Database, database_url: str
) -> None:
    """The JSON form (hence the digest) maps a timeout of None and 0 alike; a 0
    built in code is refused although the None one's plan is kept."""
    manager = run_manager(db, database_url)
    admin = Identity("t-plans", Role.ADMIN, "admin")
    default = FlowDefinition(nodes=(NodeSpec("a", "source.inline", {"records": []}),))
    zero = FlowDefinition(
        nodes=(NodeSpec("a", "source.inline", {"records": []}, timeout_seconds=0),)
    )
    assert default.digest == zero.digest
    manager.plan(default, admin)
    with pytest.raises(InvalidArgument):
        manager.plan(zero, admin)
