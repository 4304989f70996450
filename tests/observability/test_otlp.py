"""Tracing switched on by OTEL_* alone: a `kaireon-server` subprocess exports its
spans over OTLP/gRPC to a real collector endpoint (a grpc.aio TraceService here),
a REST DSAR request and its export job arrive in one trace, no customer id is in
any exported byte, and the server's JSON log lines carry the trace ids."""

from __future__ import annotations

import asyncio
import base64
import json
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from kaireon_server.demo.seed import customer_id, seed_tenant
from kaireon_server.platform.db import Database
from tests.erasure.support import SMALL
from tests.observability.support import free_port, headers
from tests.support.server import ServerProcess, base_env

CLIENT_TRACE = "6e0c63257de34c92bf9efcd03927272e"
SUBJECT = customer_id(2)


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP trace endpoint that keeps what it receives."""

    def __init__(self) -> None:
        self.requests: list[trace_service_pb2.ExportTraceServiceRequest] = []

    async def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: object
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        self.requests.append(request)
        return trace_service_pb2.ExportTraceServiceResponse()

    def spans(self) -> list[tuple[str, object]]:
        """(service.name, span) for every span received."""
        found = []
        for request in self.requests:
            for resource_spans in request.resource_spans:
                service = next(
                    (
                        a.value.string_value
                        for a in resource_spans.resource.attributes
                        if a.key == "service.name"
                    ),
                    "",
                )
                for scope in resource_spans.scope_spans:
                    found += [(service, span) for span in scope.spans]
        return found


@pytest.fixture
async def collector() -> AsyncIterator[tuple[Collector, int]]:
    server = grpc.aio.server()
    received = Collector()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(received, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield received, port
    finally:
        await server.stop(grace=None)


@pytest.fixture
def otlp_env(database_url: str, signing_key_path: Path) -> Iterator[dict[str, str]]:
    yield base_env(
        database_url,
        COSIGN_KEY=str(signing_key_path),
        KAIREON_HTTP_PORT=str(free_port()),
        OTEL_SERVICE_NAME="kaireon-otlp-test",
        OTEL_BSP_SCHEDULE_DELAY="200",  # ms: export batches quickly
        # Only a worker with a key ring claims encrypted requests: this server's,
        # not the session's in-process server (same database, tracing off).
        KAIREON_ENCRYPTION_KEYS=f"v1:{base64.b64encode(os.urandom(32)).decode()}",
    )


async def test_otlp_endpoint_receives_one_trace_for_a_rest_dsar_request(
    collector: tuple[Collector, int], otlp_env: dict[str, str], db: Database, tenant: str
):
    received, port = collector
    await seed_tenant(db, tenant, SMALL)
    env = {**otlp_env, "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}"}
    server = await asyncio.to_thread(ServerProcess(env).start)
    try:
        base = f"http://127.0.0.1:{server.http_port}"
        async with aiohttp.ClientSession(base_url=base) as http:
            async with http.post(
                "/api/v1/dsar",
                json={"subjectId": SUBJECT, "requestType": "export", "encrypt": True},
                headers={
                    **headers(tenant),
                    "traceparent": f"00-{CLIENT_TRACE}-00f067aa0ba902b7-01",
                },
            ) as response:
                assert response.status == 200, await response.text()
                request_id = (await response.json())["request"]["id"]
        for _ in range(300):
            names = {s.name for _, s in received.spans() if s.trace_id.hex() == CLIENT_TRACE}
            if "dsar.export" in names:
                break
            await asyncio.sleep(0.1)
        else:
            async with db.transaction(tenant) as con:
                state = await con.fetchrow(
                    "SELECT status, encrypt, attempts FROM dsar_request WHERE tenant_id = $1",
                    tenant,
                )
            raise AssertionError(f"no export job span over OTLP: {sorted(names)}; {state}")
    finally:
        assert server.stop() == 0

    in_trace = [(svc, s) for svc, s in received.spans() if s.trace_id.hex() == CLIENT_TRACE]
    assert {svc for svc, _ in in_trace} == {"kaireon-otlp-test"}  # OTEL_SERVICE_NAME
    names = {s.name for _, s in in_trace}
    assert {
        "POST /api/v1/dsar",
        "kaireon.dsar.v1.DsarService/CreateDsarRequest",
        "dsar.export",
    } <= names
    # Not one exported byte holds the customer id.
    for request in received.requests:
        assert SUBJECT.encode() not in request.SerializeToString()

    # The worker's log line (a real process, JSON on stderr) names the job's span.
    [job] = [s for _, s in in_trace if s.name == "dsar.export"]
    started = [
        json.loads(line)
        for line in server.log_lines
        if '"dsar export started"' in line and request_id in line
    ]
    assert len(started) == 1
    assert (started[0]["trace_id"], started[0]["span_id"]) == (CLIENT_TRACE, job.span_id.hex())
    # Lines logged outside any span carry no trace fields.
    serving = [json.loads(line) for line in server.log_lines if '"msg": "serving"' in line]
    assert serving and "trace_id" not in serving[0]
