"""The per-node fast paths give exactly what the reference code gives.

Cache keys and output digests decide whether a checkpoint is reused, so they
must stay byte-identical to sha256(rfc8785(...)); the watch's conversions must
build the same protobuf messages as json_format / Timestamp.FromDatetime.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import rfc8785
from google.protobuf import json_format, timestamp_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from kaireon.flow.v1 import flow_pb2
from kaireon_server.flow import convert, keys
from kaireon_server.flow.definition import definition_from_json, definition_to_json
from kaireon_server.flow.hooks import NodeState, RunState
from kaireon_server.flow.nodes.base import NodeError
from kaireon_server.flow.repository import NodeView, RunView
from kaireon_server.flow.watch import WatchItem

SAFE_INT = 2**53 - 1
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-SAFE_INT, SAFE_INT)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=20,
)
node_ids = st.from_regex(r"[A-Za-z0-9_.-]{1,12}", fullmatch=True)


def reference_digest(value: Any) -> str:
    return hashlib.sha256(rfc8785.dumps(value)).hexdigest()


@settings(max_examples=300, deadline=None)
@given(output=json_values)
def test_output_digest_is_sha256_of_rfc8785(output: Any) -> None:
    assert keys.output_digest(output) == reference_digest(output)


@settings(max_examples=200, deadline=None)
@given(
    node_type=st.text(min_size=1, max_size=12),
    version=st.text(max_size=6),
    inputs=st.lists(st.tuples(node_ids, st.text(max_size=64)), max_size=4),
    config=st.dictionaries(st.text(max_size=6), json_values, max_size=4),
)
def test_cache_key_and_config_digest_are_the_documented_formula(
    node_type: str, version: str, inputs: list[tuple[str, str]], config: dict[str, Any]
) -> None:
    config_sha = keys.config_digest(config)
    assert config_sha == reference_digest(config)
    expected = reference_digest(
        {
            "type": node_type,
            "version": version,
            "config": config_sha,
            "inputs": [[dep, digest] for dep, digest in inputs],
        }
    )
    assert keys.cache_key(node_type, version, config_sha, inputs) == expected


@pytest.mark.parametrize("output", [float("nan"), 2**53, {"x": object()}, {1: "a"}])
def test_non_canonical_outputs_still_fail_the_node(output: Any) -> None:
    with pytest.raises(NodeError, match="not canonical JSON"):
        keys.output_digest(output)


@st.composite
def stored_definitions(draw: st.DrawFn) -> dict[str, Any]:
    ids = draw(st.lists(node_ids, min_size=1, max_size=5, unique=True))
    nodes = []
    for i, node_id in enumerate(ids):
        node: dict[str, Any] = {
            "id": node_id,
            "type": draw(st.sampled_from(["source.inline", "transform.filter", "acme.x"])),
            "config": draw(st.dictionaries(st.text(max_size=6), json_values, max_size=3)),
            "dependsOn": draw(st.lists(st.sampled_from(ids[:i]), unique=True)) if i else [],
        }
        if draw(st.booleans()):
            node["timeoutSeconds"] = draw(st.floats(0.5, 300))
        if draw(st.booleans()):
            node["retry"] = {
                "maxAttempts": draw(st.integers(1, 10)),
                "initialBackoffSeconds": draw(st.floats(0, 10)),
            }
        nodes.append(node)
    document = {
        "name": draw(st.text(max_size=10)),
        "maxConcurrency": draw(st.integers(0, 8)),
        "onFailure": draw(
            st.sampled_from(["FAILURE_MODE_FINISH_RUNNING", "FAILURE_MODE_CANCEL_RUNNING"])
        ),
        "nodes": nodes,
    }
    # As stored: definition_to_json of the parsed definition, through JSON (jsonb).
    stored: dict[str, Any] = json.loads(
        json.dumps(definition_to_json(definition_from_json(document)))
    )
    return stored


def parse_dict(document: dict[str, Any]) -> flow_pb2.FlowDefinition:
    return json_format.ParseDict(document, flow_pb2.FlowDefinition(), ignore_unknown_fields=True)


@settings(max_examples=150, deadline=None)
@given(stored=stored_definitions())
def test_stored_definition_builds_the_message_parse_dict_builds(stored: dict[str, Any]) -> None:
    fast = convert._definition(stored)
    reference = parse_dict(stored)
    assert fast == reference
    assert fast is not None
    assert [n.HasField("config") for n in fast.nodes] == [
        n.HasField("config") for n in reference.nodes
    ]
    assert fast.SerializeToString(deterministic=True) == reference.SerializeToString(
        deterministic=True
    )


@settings(max_examples=100, deadline=None)
@given(stored=stored_definitions())
def test_definition_digest_is_sha256_of_rfc8785(stored: dict[str, Any]) -> None:
    definition = definition_from_json(stored)
    assert definition.digest == reference_digest(definition_to_json(definition))


def test_other_shapes_take_parse_dict() -> None:
    # Not definition_to_json's shape (no retry, an unknown key): ParseDict decides.
    document = {"nodes": [{"id": "a", "type": "t", "config": {"k": 1}}], "extra": True}
    assert convert._definition(document) == parse_dict(document)
    assert convert._definition({}) is None


@settings(max_examples=300, deadline=None)
@given(
    moment=st.datetimes(
        min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.none()
    ),
    offset=st.one_of(st.none(), st.integers(-14 * 60, 14 * 60)),
)
def test_timestamps_equal_from_datetime(moment: datetime, offset: int | None) -> None:
    if offset is not None:
        moment = moment.replace(tzinfo=timezone(timedelta(minutes=offset)))
    expected = timestamp_pb2.Timestamp()
    expected.FromDatetime(moment)
    assert convert._timestamp(moment) == expected


def test_watch_encoder_reuses_the_header_and_matches_plain_conversion() -> None:
    now = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    stored = definition_to_json(
        definition_from_json({"nodes": [{"id": "a", "type": "t", "config": {"k": [1, "x"]}}]})
    )
    snapshot = RunView("r", "n", stored, "dg", RunState.RUNNING, 1, "", False, now, now, None)
    header = replace(snapshot, definition={})
    node = NodeView("a", "t", NodeState.COMPLETED, 1, "", "k" * 64, "d" * 64, now, now)
    final = replace(snapshot, state=RunState.SUCCEEDED, ended_at=now, nodes=(node,))
    items = [
        WatchItem("snapshot", snapshot, at=now),
        WatchItem("node_started", header, 1, replace(node, state=NodeState.RUNNING), "", now),
        WatchItem("node_completed", header, 2, node, "", now),
        WatchItem("run_finished", final, 3, at=now),
    ]
    encode = convert.WatchEncoder()
    for item in items:
        message = encode(item)
        assert message.run == convert.run_to_proto(item.run)
        assert message.node == (
            convert.node_to_proto(item.node) if item.node else flow_pb2.NodeStatus()
        )
        assert (message.seq, message.node_id) == (item.seq, item.node.node_id if item.node else "")
    assert encode(items[-1]).run.state == flow_pb2.RUN_STATE_SUCCEEDED
    assert encode(items[-1]).run.definition == parse_dict(stored)
    assert not encode(items[1]).run.HasField("definition")
