"""Helpers for the flow service tests: definitions, waiting for runs, error details."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import asyncpg
import grpc
from google.protobuf import json_format
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from kaireon.flow.v1 import flow_pb2, flow_pb2_grpc
from kaireon_server.flow.manager import RunManager
from kaireon_server.flow.nodes.registry import default_registry
from kaireon_server.flow.notifier import FlowNotifier
from kaireon_server.flow.settings import FlowLimits
from kaireon_server.platform.db import Database
from kaireon_server.platform.db.listener import Listener
from tests.support.server import metadata

FINISHED = {flow_pb2.RUN_STATE_SUCCEEDED, flow_pb2.RUN_STATE_FAILED, flow_pb2.RUN_STATE_CANCELLED}


def definition(*nodes: dict[str, Any], **options: Any) -> flow_pb2.FlowDefinition:
    return json_format.ParseDict({"nodes": list(nodes), **options}, flow_pb2.FlowDefinition())


def step(node_id: str, *deps: str, **config: Any) -> dict[str, Any]:
    return {"id": node_id, "type": "test.step", "config": config, "dependsOn": list(deps)}


def counts(path: Path, run_id: str) -> dict[str, int]:
    """Executions per node of `run_id`, from a test.step counter file."""
    found: dict[str, int] = {}
    if not path.exists():
        return found
    for line in path.read_text().splitlines():
        run, node = line.split(" ", 1)
        if run == run_id:
            found[node] = found.get(node, 0) + 1
    return found


async def wait_finished(
    stub: flow_pb2_grpc.FlowRunnerServiceStub, tenant: str, run_id: str, timeout: float = 30
) -> flow_pb2.Run:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        reply = await stub.GetRun(flow_pb2.GetRunRequest(run_id=run_id), metadata=metadata(tenant))
        if reply.run.state in FINISHED:
            return reply.run
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"run {run_id} still {reply.run.state}")
        await asyncio.sleep(0.05)


def node_states(run: flow_pb2.Run) -> dict[str, str]:
    return {
        n.node_id: flow_pb2.NodeState.Name(n.state).removeprefix("NODE_STATE_") for n in run.nodes
    }


def bad_request(error: grpc.aio.AioRpcError) -> tuple[list[tuple[str, str]], dict[str, str], str]:
    """(field violations, ErrorInfo metadata, ErrorInfo reason) of a failed call."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    violations: list[tuple[str, str]] = []
    info_metadata: dict[str, str] = {}
    reason = ""
    for detail in status.details:
        request = error_details_pb2.BadRequest()
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(request):
            violations += [(v.field, v.description) for v in request.field_violations]
        elif detail.Unpack(info):
            info_metadata, reason = dict(info.metadata), info.reason
    return violations, info_metadata, reason


def run_manager(db: Database, database_url: str) -> RunManager:
    """A run manager in the test's process, on `db`, with default limits; its
    listener is never started (nothing waits on NOTIFY)."""
    listener = Listener(lambda: asyncpg.connect(database_url))
    return RunManager(
        db, default_registry(), FlowNotifier(listener), limits=FlowLimits.from_env({}), env={}
    )
