"""Protobuf <-> domain conversion for the flow service (the only flow module using protos)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from google.protobuf import json_format, timestamp_pb2

from kaireon.flow.v1 import flow_pb2
from kaireon_server.flow.definition import (
    FlowDefinition,
    definition_from_json,
    definition_to_json,
)
from kaireon_server.flow.hooks import NodeState, RunState
from kaireon_server.flow.outputs import NodeOutput
from kaireon_server.flow.repository import NodeView, RunView
from kaireon_server.flow.watch import WatchItem
from kaireon_server.platform.errors import InvalidArgument
from kaireon_server.platform.lru import Lru

_RUN_STATES = {
    RunState.PENDING: flow_pb2.RUN_STATE_PENDING,
    RunState.RUNNING: flow_pb2.RUN_STATE_RUNNING,
    RunState.SUCCEEDED: flow_pb2.RUN_STATE_SUCCEEDED,
    RunState.FAILED: flow_pb2.RUN_STATE_FAILED,
    RunState.CANCELLED: flow_pb2.RUN_STATE_CANCELLED,
}
_NODE_STATES = {
    NodeState.PENDING: flow_pb2.NODE_STATE_PENDING,
    NodeState.RUNNING: flow_pb2.NODE_STATE_RUNNING,
    NodeState.COMPLETED: flow_pb2.NODE_STATE_COMPLETED,
    NodeState.SKIPPED: flow_pb2.NODE_STATE_SKIPPED,
    NodeState.FAILED: flow_pb2.NODE_STATE_FAILED,
    NodeState.CANCELLED: flow_pb2.NODE_STATE_CANCELLED,
}
_EVENT_TYPES = {
    "snapshot": flow_pb2.RUN_EVENT_TYPE_SNAPSHOT,
    "node_started": flow_pb2.RUN_EVENT_TYPE_NODE_STARTED,
    "node_completed": flow_pb2.RUN_EVENT_TYPE_NODE_COMPLETED,
    "node_skipped": flow_pb2.RUN_EVENT_TYPE_NODE_SKIPPED,
    "node_failed": flow_pb2.RUN_EVENT_TYPE_NODE_FAILED,
    "run_finished": flow_pb2.RUN_EVENT_TYPE_RUN_FINISHED,
}


def definition_from_proto(
    message: flow_pb2.FlowDefinition, path: str = "definition"
) -> FlowDefinition:
    try:
        document = json_format.MessageToDict(message)
    except json_format.Error:
        # NaN/Infinity in a Struct. input_checks refuses them before any handler;
        # should one get here anyway it is bad input, never INTERNAL.
        raise InvalidArgument.field(path, "holds a number with no JSON form") from None
    return definition_from_json(document, path=path)


# Wire bytes of the definitions kept converted (weighed by those bytes; a
# converted definition holds a few times as much).
DEFINITION_CACHE_BYTES = 1024 * 1024


@dataclass(frozen=True)
class ConvertedDefinition:
    definition: FlowDefinition
    # The definition as a reply shows it: run_to_proto's of the stored form.
    stored: flow_pb2.FlowDefinition


class RequestDefinitions:
    """The definitions of recent requests, converted, by tenant and wire bytes.

    A service starting the same flow again and again then converts it once, and
    gets the same frozen FlowDefinition back: its digest is computed once and
    the run manager's plan for it is found by that digest. Equal bytes are an
    equal message, hence an equal definition; a definition that does not
    convert is refused every time, never kept. Entries are per tenant: a hit is
    faster than a miss, and no tenant may learn by timing what another one runs."""

    def __init__(self, max_bytes: int = DEFINITION_CACHE_BYTES) -> None:
        self._lru: Lru[tuple[str, bytes], ConvertedDefinition] = Lru(
            max_bytes, lambda key, _value: len(key[1]) + 1024
        )

    def get(
        self, tenant_id: str, message: flow_pb2.FlowDefinition, path: str = "definition"
    ) -> ConvertedDefinition:
        key = (tenant_id, message.SerializeToString(deterministic=True))
        found = self._lru.get(key)
        if found is None:
            definition = definition_from_proto(message, path)
            stored = _definition(definition_to_json(definition))
            assert stored is not None  # a valid definition has nodes
            found = ConvertedDefinition(definition, stored)
            self._lru.put(key, found)
        return found


def run_state_from_proto(value: int) -> RunState | None:
    for state, number in _RUN_STATES.items():
        if number == value:
            return state
    return None


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _timestamp(moment: datetime | None) -> timestamp_pb2.Timestamp | None:
    """Timestamp.FromDatetime's value by arithmetic (a watch converts several per event)."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # naive means UTC, as FromDatetime reads it
    delta = moment - _EPOCH
    return timestamp_pb2.Timestamp(
        seconds=delta.days * 86400 + delta.seconds, nanos=delta.microseconds * 1000
    )


def node_to_proto(node: NodeView) -> flow_pb2.NodeStatus:
    return flow_pb2.NodeStatus(
        node_id=node.node_id,
        state=_NODE_STATES[node.state],
        attempts=node.attempts,
        error=node.error,
        start_time=_timestamp(node.started_at),
        end_time=_timestamp(node.ended_at),
        cache_key=node.cache_key,
        type=node.node_type,
        output_digest=node.output_digest,
    )


def _definition(document: Mapping[str, Any]) -> flow_pb2.FlowDefinition | None:
    if not document:
        return None
    try:
        return _definition_of_stored(document)
    except (KeyError, TypeError, ValueError, AttributeError):
        return json_format.ParseDict(
            dict(document), flow_pb2.FlowDefinition(), ignore_unknown_fields=True
        )


_DEFINITION_KEYS = {"name", "maxConcurrency", "onFailure", "nodes"}
_NODE_KEYS = {"id", "type", "config", "dependsOn", "timeoutSeconds", "retry"}
_RETRY_KEYS = {"maxAttempts", "initialBackoffSeconds", "maxBackoffSeconds", "backoffMultiplier"}


def _definition_of_stored(document: Mapping[str, Any]) -> flow_pb2.FlowDefinition:
    """The message ParseDict builds from definition_to_json's exact shape, field by
    field (ParseDict is pure Python and costs ~17 µs per node; runs convert their
    definition for StartRun, GetRun and each watch). Any other shape raises and
    takes ParseDict."""
    if document.keys() != _DEFINITION_KEYS:
        raise KeyError("not the stored shape")
    message = flow_pb2.FlowDefinition(
        name=document["name"],
        max_concurrency=document["maxConcurrency"],
        on_failure=flow_pb2.FailureMode.Value(document["onFailure"]),
    )
    for node in document["nodes"]:
        retry = node["retry"]
        if node.keys() != _NODE_KEYS or retry.keys() != _RETRY_KEYS:
            raise KeyError("not the stored shape")
        item = message.nodes.add(
            id=node["id"],
            type=node["type"],
            depends_on=node["dependsOn"],
            timeout_seconds=node["timeoutSeconds"],
            retry=flow_pb2.RetryPolicy(
                max_attempts=retry["maxAttempts"],
                initial_backoff_seconds=retry["initialBackoffSeconds"],
                max_backoff_seconds=retry["maxBackoffSeconds"],
                backoff_multiplier=retry["backoffMultiplier"],
            ),
        )
        item.config.SetInParent()
        item.config.update(node["config"])
    return message


def run_to_proto(view: RunView, definition: flow_pb2.FlowDefinition | None = None) -> flow_pb2.Run:
    """`definition`: the view's definition already converted (a watch converts it once)."""
    return flow_pb2.Run(
        run_id=view.run_id,
        definition=definition if definition is not None else _definition(view.definition),
        state=_RUN_STATES[view.state],
        nodes=[node_to_proto(n) for n in view.nodes],
        attempt=view.attempt,
        error=view.error,
        create_time=_timestamp(view.created_at),
        start_time=_timestamp(view.started_at),
        end_time=_timestamp(view.ended_at),
        definition_digest=view.definition_digest,
        cancel_requested=view.cancel_requested,
    )


class WatchEncoder:
    """Converts the items of one watch. Node events share one run header (the
    same RunView object), converted once; the snapshot's definition is reused
    for the final view when it is unchanged: per event, only the node differs."""

    def __init__(self) -> None:
        self._view: RunView | None = None
        self._run: flow_pb2.Run | None = None
        self._definition: tuple[Mapping[str, Any], flow_pb2.FlowDefinition | None] | None = None

    def _run_of(self, view: RunView) -> flow_pb2.Run:
        if view is not self._view or self._run is None:
            definition = None
            if view.definition:
                if self._definition is None or self._definition[0] != view.definition:
                    self._definition = (view.definition, _definition(view.definition))
                definition = self._definition[1]
            self._view, self._run = view, run_to_proto(view, definition)
        return self._run

    def __call__(self, item: WatchItem) -> flow_pb2.WatchRunResponse:
        return flow_pb2.WatchRunResponse(
            type=_EVENT_TYPES[item.type],
            node_id=item.node.node_id if item.node else "",
            run=self._run_of(item.run),
            error=item.error,
            event_time=_timestamp(item.at),
            node=node_to_proto(item.node) if item.node else None,
            seq=item.seq,
        )


def node_output_to_proto(found: NodeOutput) -> flow_pb2.GetNodeOutputResponse:
    return flow_pb2.GetNodeOutputResponse(
        run_id=found.run_id,
        node_id=found.node_id,
        node_type=found.node_type,
        output_json=found.canonical.decode() if found.canonical is not None else "",
        output_digest=found.digest,
        size_bytes=found.size_bytes,
        truncated=found.truncated,
        checkpoint_time=_timestamp(found.checkpoint_time),
    )
