"""FlowRunnerService handlers: thin translation between protobuf and the run manager."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor

from kaireon.flow.v1 import flow_pb2, flow_pb2_grpc
from kaireon_server.capability import ServiceContext
from kaireon_server.flow import convert
from kaireon_server.flow.manager import RunManager, validate_run_id
from kaireon_server.flow.nodes.registry import default_registry
from kaireon_server.flow.notifier import FlowNotifier
from kaireon_server.flow.outputs import read_node_output
from kaireon_server.flow.settings import FlowLimits
from kaireon_server.flow.validation import NODE_ID
from kaireon_server.flow.watch import watch_run
from kaireon_server.platform.auth import current_identity
from kaireon_server.platform.errors import InvalidArgument
from kaireon_server.platform.paging import clamp_page_size

Context = grpc.aio.ServicerContext[Any, Any]


def _required_run_id(run_id: str) -> str:
    if not run_id:
        raise InvalidArgument.field("run_id", "is required")
    # The syntax StartRun enforces: an id that cannot exist is refused before
    # any query, and never echoed back in an error (it may be megabytes long).
    return validate_run_id(run_id)


class FlowRunnerServicer(flow_pb2_grpc.FlowRunnerServiceServicer):
    def __init__(self, manager: RunManager, notifier: FlowNotifier) -> None:
        self._manager = manager
        self._notifier = notifier
        self._definitions = convert.RequestDefinitions()

    async def StartRun(
        self, request: flow_pb2.StartRunRequest, context: Context
    ) -> flow_pb2.StartRunResponse:
        identity = current_identity()
        converted = self._definitions.get(identity.tenant_id, request.definition)
        view = await self._manager.start_run(identity, converted.definition, request.run_id)
        return flow_pb2.StartRunResponse(run=convert.run_to_proto(view, converted.stored))

    async def RetryRun(
        self, request: flow_pb2.RetryRunRequest, context: Context
    ) -> flow_pb2.RetryRunResponse:
        identity = current_identity()
        run_id = _required_run_id(request.run_id)
        definition = (
            self._definitions.get(identity.tenant_id, request.definition).definition
            if request.HasField("definition")
            else None
        )
        view = await self._manager.retry_run(identity, run_id, definition)
        return flow_pb2.RetryRunResponse(run=convert.run_to_proto(view))

    async def GetRun(
        self, request: flow_pb2.GetRunRequest, context: Context
    ) -> flow_pb2.GetRunResponse:
        identity = current_identity()
        view = await self._manager.get(identity.tenant_id, _required_run_id(request.run_id))
        return flow_pb2.GetRunResponse(run=convert.run_to_proto(view))

    async def ListRuns(
        self, request: flow_pb2.ListRunsRequest, context: Context
    ) -> flow_pb2.ListRunsResponse:
        identity = current_identity()
        limit = clamp_page_size(request.page_size, default=50, maximum=500)
        state = None
        if request.state:
            state = convert.run_state_from_proto(request.state)
            if state is None:
                raise InvalidArgument.field("state", "unknown run state")
        page, token = await self._manager.list_runs(
            identity.tenant_id, limit=limit, page_token=request.page_token, state=state
        )
        return flow_pb2.ListRunsResponse(
            runs=[convert.run_to_proto(v) for v in page], next_page_token=token
        )

    async def ClearCheckpoints(
        self, request: flow_pb2.ClearCheckpointsRequest, context: Context
    ) -> flow_pb2.ClearCheckpointsResponse:
        identity = current_identity()
        cleared = await self._manager.clear_checkpoints(identity, _required_run_id(request.run_id))
        return flow_pb2.ClearCheckpointsResponse(cleared=cleared)

    async def CancelRun(
        self, request: flow_pb2.CancelRunRequest, context: Context
    ) -> flow_pb2.CancelRunResponse:
        identity = current_identity()
        view = await self._manager.cancel_run(identity, _required_run_id(request.run_id))
        return flow_pb2.CancelRunResponse(run=convert.run_to_proto(view))

    async def GetNodeOutput(
        self, request: flow_pb2.GetNodeOutputRequest, context: Context
    ) -> flow_pb2.GetNodeOutputResponse:
        identity = current_identity()
        run_id = _required_run_id(request.run_id)
        if not request.node_id:
            raise InvalidArgument.field("node_id", "is required")
        if not NODE_ID.fullmatch(request.node_id):
            raise InvalidArgument.field("node_id", "1 to 128 characters of A-Z, a-z, 0-9, _ . -")
        found = await read_node_output(
            self._manager.db,
            identity.tenant_id,
            run_id,
            request.node_id,
            max_bytes=request.max_bytes,
        )
        return convert.node_output_to_proto(found)

    async def WatchRun(
        self, request: flow_pb2.WatchRunRequest, context: Context
    ) -> AsyncIterator[flow_pb2.WatchRunResponse]:
        identity = current_identity()
        run_id = _required_run_id(request.run_id)
        encode = convert.WatchEncoder()
        async for item in watch_run(self._manager.db, self._notifier, identity.tenant_id, run_id):
            yield encode(item)


class FlowCapability:
    """The service plus its background work: the NOTIFY listener and the orphan sweep."""

    def __init__(self, ctx: ServiceContext) -> None:
        env = ctx.settings.env
        self.notifier = FlowNotifier(ctx.listener)
        self.manager = RunManager(
            ctx.db,
            default_registry(),
            self.notifier,
            limits=FlowLimits.from_env(env),
            env=env,
            signer=ctx.signer,
        )
        self._servicer = FlowRunnerServicer(self.manager, self.notifier)

    @property
    def descriptor(self) -> ServiceDescriptor:
        return flow_pb2.DESCRIPTOR.services_by_name["FlowRunnerService"]

    def add_to_server(self, server: grpc.aio.Server) -> None:
        flow_pb2_grpc.add_FlowRunnerServiceServicer_to_server(self._servicer, server)

    def drain_summary(self) -> dict[str, object]:
        return {"flow_runs_in_progress": len(self.manager.executors.active)}

    async def start(self) -> None:
        await self.notifier.start()
        await self.manager.start()

    async def stop(self) -> None:
        await self.manager.stop()
        await self.notifier.stop()


def build(ctx: ServiceContext) -> FlowCapability:
    return FlowCapability(ctx)
