"""Shared by the identity tests: a victim tenant with visible data, token makers, calls."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

import grpc
import jwt

from kaireon.audit.v1 import audit_pb2, audit_pb2_grpc
from kaireon.erasure.v1 import erasure_pb2, erasure_pb2_grpc
from kaireon.flow.v1 import flow_pb2, flow_pb2_grpc
from tests.security.conftest import flow_definition, new_tenant, wait_run
from tests.support.server import JWT_SECRET, metadata

AUDIT_PATH = "/api/v1/audit/events"  # admin only
RUNS_PATH = "/api/v1/flow/runs"  # viewer and up


@dataclass(frozen=True)
class Victim:
    """A tenant whose data no other identity may see: a run and a hold carry `marker`."""

    tenant: str
    marker: str


async def make_victim(channel: grpc.aio.Channel) -> Victim:
    victim = Victim(new_tenant("v"), secrets.token_hex(6))
    md = metadata(victim.tenant, "admin")
    await erasure_pb2_grpc.ErasureServiceStub(channel).SetLegalHold(
        erasure_pb2.SetLegalHoldRequest(customer_id="cust_1", reason=f"case-{victim.marker}"),
        metadata=md,
    )
    run_id = f"run-{victim.marker}"
    await flow_pb2_grpc.FlowRunnerServiceStub(channel).StartRun(
        flow_pb2.StartRunRequest(definition=flow_definition(victim.marker), run_id=run_id),
        metadata=md,
    )
    await wait_run(channel, victim.tenant, run_id)
    # The victim itself sees its rows: the leaks the tests look for are real data.
    events = await audit_pb2_grpc.AuditServiceStub(channel).ListAuditEvents(
        audit_pb2.ListAuditEventsRequest(page_size=100), metadata=md
    )
    assert events.events, "the victim has audit rows"
    runs = await flow_pb2_grpc.FlowRunnerServiceStub(channel).ListRuns(
        flow_pb2.ListRunsRequest(), metadata=metadata(victim.tenant, "viewer")
    )
    assert victim.marker in str(runs)
    return victim


def token(claims: dict[str, Any], *, secret: str = JWT_SECRET, **kw: Any) -> str:
    """An HS256 token with exactly these claims (exp defaults to five minutes)."""
    body = {"sub": "test-user", "exp": int(time.time()) + 300, **claims}
    return jwt.encode(body, secret, algorithm="HS256", **kw)


def raw_token(header: dict[str, Any], claims: dict[str, Any], signature: bytes) -> str:
    """A token assembled by hand: any header, any claims, any signature bytes."""

    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    return ".".join(
        [part(json.dumps(header).encode()), part(json.dumps(claims).encode()), part(signature)]
    )


async def grpc_audit(
    channel: grpc.aio.Channel, md: tuple[tuple[str, str], ...]
) -> tuple[grpc.StatusCode, str]:
    """ListAuditEvents (admin only) with this metadata: (code, text of the reply)."""
    try:
        reply = await audit_pb2_grpc.AuditServiceStub(channel).ListAuditEvents(
            audit_pb2.ListAuditEventsRequest(page_size=100), metadata=md, timeout=30
        )
    except grpc.aio.AioRpcError as error:
        return error.code(), error.details() or ""
    return grpc.StatusCode.OK, str(reply)


async def grpc_runs(
    channel: grpc.aio.Channel, md: tuple[tuple[str, str], ...]
) -> tuple[grpc.StatusCode, str]:
    """ListRuns (viewer and up) with this metadata: (code, text of the reply)."""
    try:
        reply = await flow_pb2_grpc.FlowRunnerServiceStub(channel).ListRuns(
            flow_pb2.ListRunsRequest(), metadata=md, timeout=30
        )
    except grpc.aio.AioRpcError as error:
        return error.code(), error.details() or ""
    return grpc.StatusCode.OK, str(reply)


async def rest_get(port: int, path: str, headers: list[tuple[str, str]]) -> tuple[int, str]:
    """GET over a raw HTTP/1.1 connection: headers go out exactly as given (HTTP client
    libraries merge repeated names, and repeats are what these tests send)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Connection: close"]
        lines += [f"{name}: {value}" for name, value in headers]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), 60)
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if b"transfer-encoding: chunked" in head.lower():
        body = _dechunk(body)
    return status, body.decode("utf-8", "replace")


def _dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out, data = out + data[:size], data[size + 2 :]
    return out
