"""Protobuf <-> domain conversion for the flow service (the only flow module using protos)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from google.protobuf import json_format, timestamp_pb2

from kaireon.flow.v1 import flow_pb2
from kaireon_server.flow.definition import FlowDefinition, definition_from_json
from kaireon_server.flow.hooks import NodeState, RunState
from kaireon_server.flow.repository import NodeView, RunView
from kaireon_server.flow.watch import WatchItem

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
    return definition_from_json(json_format.MessageToDict(message), path=path)


def run_state_from_proto(value: int) -> RunState | None:
    for state, number in _RUN_STATES.items():
        if number == value:
            return state
    return None


def _timestamp(moment: datetime | None) -> timestamp_pb2.Timestamp | None:
    if moment is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp


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
    return json_format.ParseDict(
        dict(document), flow_pb2.FlowDefinition(), ignore_unknown_fields=True
    )


def run_to_proto(view: RunView) -> flow_pb2.Run:
    return flow_pb2.Run(
        run_id=view.run_id,
        definition=_definition(view.definition),
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


def watch_to_proto(item: WatchItem) -> flow_pb2.WatchRunResponse:
    return flow_pb2.WatchRunResponse(
        type=_EVENT_TYPES[item.type],
        node_id=item.node.node_id if item.node else "",
        run=run_to_proto(item.run),
        error=item.error,
        event_time=_timestamp(item.at),
        node=node_to_proto(item.node) if item.node else None,
        seq=item.seq,
    )
