"""One tenant cannot take every flow-run slot (KAIREON_FLOW_TENANT_MAX_RUNS): with its
share executing, its next StartRun/RetryRun is refused at once with a retry hint,
while another tenant's StartRun still succeeds."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from kaireon.flow.v1 import flow_pb2, flow_pb2_grpc
from kaireon_server.app import App
from kaireon_server.flow.manager import RunManager
from kaireon_server.flow.service import FlowCapability
from kaireon_server.platform.config import Settings
from tests.flow.support import definition, step, wait_finished
from tests.support.server import metadata

MAX_RUNS, TENANT_MAX_RUNS = 4, 2


@pytest.fixture
async def small_app(server_env: dict[str, str]) -> AsyncIterator[App]:
    env = {
        **server_env,
        "KAIREON_FLOW_MAX_RUNS": str(MAX_RUNS),
        "KAIREON_FLOW_TENANT_MAX_RUNS": str(TENANT_MAX_RUNS),
    }
    app = App(Settings.from_env(env))
    await app.start()
    yield app
    await app.stop(grace=1)


def _manager(app: App) -> RunManager:
    return next(c for c in app.capabilities if isinstance(c, FlowCapability)).manager


def refusal(error: grpc.aio.AioRpcError) -> tuple[str, float | None]:
    status = rpc_status.from_call(error)
    assert status is not None
    reason, delay = "", None
    for detail in status.details:
        info, retry = error_details_pb2.ErrorInfo(), error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            reason = info.reason
        elif detail.Unpack(retry):
            delay = retry.retry_delay.ToTimedelta().total_seconds()
    return reason, delay


async def test_one_tenant_filling_its_share_leaves_room_for_another(
    small_app: App, tenant: str
) -> None:
    other = tenant + "x"
    idle = definition(step("idle", sleep=60))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{small_app.grpc_port}") as channel:
        stub = flow_pb2_grpc.FlowRunnerServiceStub(channel)

        async def start(who: str, run_id: str) -> flow_pb2.Run:
            reply = await stub.StartRun(
                flow_pb2.StartRunRequest(definition=idle, run_id=run_id),
                metadata=metadata(who, "operator"),
                timeout=30,
            )
            return reply.run

        await stub.StartRun(
            flow_pb2.StartRunRequest(definition=definition(step("quick")), run_id="done"),
            metadata=metadata(tenant, "operator"),
        )
        assert (await wait_finished(stub, tenant, "done")).state == flow_pb2.RUN_STATE_SUCCEEDED
        for i in range(TENANT_MAX_RUNS):
            await start(tenant, f"mine{i}")
        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as share:
            await start(tenant, "one-too-many")
        assert time.monotonic() - started < 1.0
        assert share.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert refusal(share.value) == ("FLOW_TENANT_RUNS_EXHAUSTED", 1.0)
        # A retry needs a slot too.
        with pytest.raises(grpc.aio.AioRpcError) as retry:
            await stub.RetryRun(
                flow_pb2.RetryRunRequest(run_id="done"), metadata=metadata(tenant, "operator")
            )
        assert refusal(retry.value) == ("FLOW_TENANT_RUNS_EXHAUSTED", 1.0)
        # The other tenant still starts (on main, the first one's runs took every slot).
        run = await start(other, "theirs")
        assert run.run_id == "theirs"
        for i in range(TENANT_MAX_RUNS):
            await stub.CancelRun(
                flow_pb2.CancelRunRequest(run_id=f"mine{i}"), metadata=metadata(tenant, "operator")
            )
            # CancelRun answers once the run's executor is done: its slot is free.
            assert (tenant, f"mine{i}") not in _manager(small_app).executors.active
        # Slots come back when runs end: the first tenant is admitted again.
        assert (await start(tenant, "again")).run_id == "again"
        for who, run_id in ((other, "theirs"), (tenant, "again")):
            await stub.CancelRun(
                flow_pb2.CancelRunRequest(run_id=run_id), metadata=metadata(who, "operator")
            )
