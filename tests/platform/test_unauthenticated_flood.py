"""A thousand unauthenticated calls (gRPC and REST, on authenticated methods)
while an authenticated client works: each is refused quickly and clearly
(UNAUTHENTICATED / 401), they take no admission slot, and the authenticated
client's latency stays within a generous bound of its own baseline measured
in the same test, against a server in its own process (its own event loop).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Iterator

import aiohttp
import grpc
import pytest

from kaireon.audit.v1 import audit_pb2, audit_pb2_grpc
from tests.support.server import ServerProcess, metadata

FLOOD = 1000


@pytest.fixture
def server(server_env: dict[str, str]) -> Iterator[ServerProcess]:
    process = ServerProcess({**server_env, "KAIREON_GRPC_MAX_CONCURRENT_RPCS": "100"}).start()
    try:
        yield process
    finally:
        process.stop()


async def _authenticated_latencies(
    stub: audit_pb2_grpc.AuditServiceStub, tenant: str, calls: int
) -> list[float]:
    seconds = []
    for _ in range(calls):
        began = time.perf_counter()
        reply = await stub.GetCheckpoint(
            audit_pb2.GetCheckpointRequest(), metadata=metadata(tenant), timeout=30
        )
        seconds.append(time.perf_counter() - began)
        assert reply is not None
    return seconds


async def _anonymous_grpc(stub: audit_pb2_grpc.AuditServiceStub, i: int) -> tuple[str, float]:
    began = time.perf_counter()
    # Half with no identity at all, half with a token that is not one.
    extra = () if i % 2 else (("authorization", "Bearer not.a.token"),)
    try:
        await stub.ListAuditEvents(audit_pb2.ListAuditEventsRequest(), metadata=extra, timeout=30)
    except grpc.aio.AioRpcError as error:
        return error.code().name, time.perf_counter() - began
    return "OK", time.perf_counter() - began


async def _anonymous_rest(session: aiohttp.ClientSession, base: str, i: int) -> tuple[str, float]:
    began = time.perf_counter()
    headers = {} if i % 2 else {"Authorization": "Bearer not.a.token"}
    async with session.get(f"{base}/api/v1/audit/events", headers=headers) as response:
        await response.read()
        return str(response.status), time.perf_counter() - began


async def test_unauthenticated_flood_is_refused_fast_and_does_not_starve_a_caller(
    server: ServerProcess, tenant: str
) -> None:
    base = f"http://127.0.0.1:{server.http_port}"
    async with (
        grpc.aio.insecure_channel(server.target) as own,
        grpc.aio.insecure_channel(server.target) as hostile,
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=200)) as session,
    ):
        stub = audit_pb2_grpc.AuditServiceStub(own)
        await _authenticated_latencies(stub, tenant, 5)  # warm-up
        baseline = statistics.median(await _authenticated_latencies(stub, tenant, 30))

        hostile_stub = audit_pb2_grpc.AuditServiceStub(hostile)
        flood = asyncio.gather(
            *(_anonymous_grpc(hostile_stub, i) for i in range(FLOOD // 2)),
            *(_anonymous_rest(session, base, i) for i in range(FLOOD // 2)),
        )
        began = time.perf_counter()
        loaded, results = await asyncio.gather(_authenticated_latencies(stub, tenant, 30), flood)
        flood_seconds = time.perf_counter() - began

    outcomes = {outcome for outcome, _ in results}
    assert outcomes == {"UNAUTHENTICATED", "401"}, outcomes
    # Quickly: the slowest refusal well inside a client's patience.
    assert max(seconds for _, seconds in results) < 10, flood_seconds
    # Not starved: generous against the same client's unloaded median.
    under_load = statistics.median(loaded)
    assert under_load < max(20 * baseline, baseline + 0.5), (baseline, under_load)
