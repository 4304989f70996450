"""Fixtures: the test proto compiled at test time, a real grpc.aio server
implementing it, gateways in front of it on ephemeral ports, and an aiohttp
client. Nothing is mocked: every test goes HTTP -> gateway -> gRPC -> server.
"""

from __future__ import annotations

import asyncio
import base64
import importlib
import os
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import aiohttp
import google.api
import grpc
import grpc_tools
import pytest
from google.protobuf import any_pb2, text_format
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from grpc_tools import protoc

from kaireon_server.gateway import GatewayServer, GatewaySettings

# The aio health servicer; grpc-stubs do not declare health.aio.
health_aio: Any = importlib.import_module("grpc_health.v1._async")

PROTO_ROOT = Path(__file__).parent / "protos"
TEST_SERVICE = "gwtest.v1.TestService"


@dataclass
class Proto:
    pb2: ModuleType
    grpc: ModuleType


def compile_test_proto(out_dir: Path) -> Proto:
    """grpc_tools.protoc over tests/gateway/protos into out_dir, then import it."""
    googleapis = Path(google.api.__path__[0]).parent.parent
    wkt = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{googleapis}",
        f"-I{wkt}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        "gwtest/v1/gwtest.proto",
    ]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed on the gateway test proto")
    sys.path.insert(0, str(out_dir))
    return Proto(
        importlib.import_module("gwtest.v1.gwtest_pb2"),
        importlib.import_module("gwtest.v1.gwtest_pb2_grpc"),
    )


@pytest.fixture(scope="session")
def proto(tmp_path_factory: pytest.TempPathFactory) -> Proto:
    return compile_test_proto(tmp_path_factory.mktemp("gwtest_gen"))


@dataclass
class BackendState:
    """What the test server observed, for tests to wait on."""

    started: dict[str, asyncio.Event] = field(default_factory=dict)
    cancelled: dict[str, asyncio.Event] = field(default_factory=dict)
    gates: dict[str, asyncio.Event] = field(default_factory=dict)

    def event(self, table: dict[str, asyncio.Event], key: str) -> asyncio.Event:
        return table.setdefault(key, asyncio.Event())


def _metadata_dict(context: grpc.aio.ServicerContext[Any, Any]) -> dict[str, str]:
    result: dict[str, str] = {}
    for key, value in context.invocation_metadata() or ():
        if isinstance(value, bytes):
            result[key] = "b64:" + base64.b64encode(value).decode()
        else:
            result[key] = value
    return result


def make_servicer(proto: Proto, state: BackendState) -> Any:
    pb = proto.pb2

    def echo(method: str, request: Any, context: Any) -> Any:
        remaining = context.time_remaining()
        return pb.EchoResponse(
            method=method,
            request_text=text_format.MessageToString(request),
            metadata=_metadata_dict(context),
            timeout_remaining=-1.0 if remaining is None else remaining,
        )

    class Servicer(proto.grpc.TestServiceServicer):  # type: ignore[name-defined,misc]
        async def Echo(self, request: Any, context: Any) -> Any:
            return request

        async def EchoField(self, request: Any, context: Any) -> Any:
            return pb.EchoFieldResponse(id=request.id, items=request.items)

        async def GetInner(self, request: Any, context: Any) -> Any:
            if request.id == "unset":
                return pb.InnerResponse(other="no inner")
            return pb.InnerResponse(inner=pb.Nested(label=request.id), other="x")

        async def Download(self, request: Any, context: Any) -> Any:
            await context.send_initial_metadata(
                (
                    ("x-provenance-schema", "kaireon.provenance.v1"),
                    ("x-provenance-digest", "ab" * 32),
                    ("x-provenance-signature", "unsigned"),
                    ("x-other", "o"),
                )
            )
            blob = _http_body("text/csv; charset=utf-8", b"a,b\n1,2\n")
            return pb.DownloadResponse(blob=blob, etag="e1")

        async def Raw(self, request: Any, context: Any) -> Any:
            return _http_body("image/png", bytes(range(256)))

        async def Meta(self, request: Any, context: Any) -> Any:
            headers = tuple(request.reply_headers.items())
            trailers = tuple(request.reply_trailers.items())
            if request.fail_code and not request.send_headers_first:
                # Nothing sent before the failure: a trailers-only response.
                context.set_trailing_metadata(headers + trailers)
                await context.abort(_code(request.fail_code), "meta failed")
            await context.send_initial_metadata(headers)
            context.set_trailing_metadata(trailers)
            if request.fail_code:
                await context.abort(_code(request.fail_code), "meta failed")
            return echo("Meta", request, context)

        async def Fail(self, request: Any, context: Any) -> Any:
            if not request.with_details:
                await context.abort(_code(request.code), request.message)
            info = any_pb2.Any()
            info.Pack(
                error_details_pb2.ErrorInfo(
                    reason="TEST_REASON", domain="gwtest.example", metadata={"k": "v"}
                )
            )
            bad = any_pb2.Any()
            bad.Pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field="customer_id", description="must not be empty"
                        )
                    ]
                )
            )
            unknown = any_pb2.Any(type_url="type.googleapis.com/gwtest.Unknown", value=b"\x01")
            status = status_pb2.Status(
                code=request.code, message=request.message, details=[info, bad, unknown]
            )
            await context.abort_with_status(rpc_status.to_status(status))

        async def Slow(self, request: Any, context: Any) -> Any:
            state.event(state.started, request.tag).set()
            try:
                await asyncio.sleep(request.seconds)
            except asyncio.CancelledError:
                state.event(state.cancelled, request.tag).set()
                raise
            return echo("Slow", request, context)

        async def Watch(self, request: Any, context: Any) -> AsyncIterator[Any]:
            state.event(state.started, request.id).set()
            try:
                for seq in range(request.count):
                    yield pb.WatchResponse(seq=seq, id=request.id, big=2**53 + seq)
                    if seq == 0 and request.wait_gate:
                        await state.event(state.gates, request.id).wait()
                seq = request.count
                while request.forever:
                    yield pb.WatchResponse(seq=seq, id=request.id)
                    seq += 1
                    await asyncio.sleep(0.02)
            except asyncio.CancelledError:
                state.event(state.cancelled, request.id).set()
                raise
            if request.fail_code:
                await context.abort(_code(request.fail_code), "watch failed")

        async def StreamChunks(self, request: Any, context: Any) -> AsyncIterator[Any]:
            offset = 0
            for part in (b'{"part":', b'"one"', b"}"):
                yield pb.ChunkResponse(chunk=_http_body("application/json", part), offset=offset)
                offset += len(part)
                if request.fail_code:
                    await context.abort(_code(request.fail_code), "chunk failed")

    for name in (
        "GetMessage",
        "GetSpecialMessage",
        "GetBook",
        "CreateBook",
        "UpdateBook",
        "CancelTask",
        "GetTask",
        "GetFile",
        "ListFiles",
        "GetThing",
        "DeleteThing",
        "GetThingV1",
        "GetThingV2",
        "Search",
        "Query",
        "QueryWithPath",
        "Upload",
        "NoHttp",
    ):

        async def handler(self: Any, request: Any, context: Any, _name: str = name) -> Any:
            return echo(_name, request, context)

        setattr(Servicer, name, handler)
    return Servicer()


def _code(number: int) -> grpc.StatusCode:
    """The grpc.StatusCode of a code number."""
    for code in grpc.StatusCode:
        if code.value[0] == number:
            return code
    raise ValueError(number)


def _http_body(content_type: str, data: bytes) -> Any:
    from google.api import httpbody_pb2

    return httpbody_pb2.HttpBody(content_type=content_type, data=data)


@dataclass
class Backend:
    port: int
    state: BackendState
    health: Any  # grpc_health.v1.health.aio.HealthServicer (untyped in the stubs)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"


@pytest.fixture(scope="session")
async def backend(proto: Proto) -> AsyncIterator[Backend]:
    server = grpc.aio.server()
    state = BackendState()
    proto.grpc.add_TestServiceServicer_to_server(make_servicer(proto, state), server)
    health_servicer = health_aio.HealthServicer()
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield Backend(port, state, health_servicer)
    await server.stop(grace=None)


async def _gateway(backend: Backend, proto: Proto, settings: GatewaySettings) -> GatewayServer:
    gateway = GatewayServer(backend.target, [proto.pb2.DESCRIPTOR], settings)
    await gateway.start("127.0.0.1", 0)
    return gateway


SMALL_LIMIT = 64 * 1024


@pytest.fixture(scope="session")
async def gateway(backend: Backend, proto: Proto) -> AsyncIterator[str]:
    """Base URL of a default gateway (64 KiB body limit) in front of the backend."""
    server = await _gateway(backend, proto, GatewaySettings(max_body_bytes=SMALL_LIMIT))
    yield f"http://127.0.0.1:{server.port}"
    await server.stop()


@pytest.fixture(scope="session")
async def lenient_gateway(backend: Backend, proto: Proto) -> AsyncIterator[str]:
    """KAIREON_GATEWAY_STRICT_JSON=false: unknown fields and query parameters ignored."""
    server = await _gateway(backend, proto, GatewaySettings(strict_json=False))
    yield f"http://127.0.0.1:{server.port}"
    await server.stop()


@pytest.fixture(scope="session")
async def strict_gateway(backend: Backend, proto: Proto) -> AsyncIterator[str]:
    """Strict JSON, grpc-gateway's 501 for a wrong method, a 2 s default deadline."""
    settings = GatewaySettings(
        strict_json=True, method_not_allowed_status=501, default_timeout_seconds=2.0
    )
    server = await _gateway(backend, proto, settings)
    yield f"http://127.0.0.1:{server.port}"
    await server.stop()


@pytest.fixture(scope="session")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


@pytest.fixture
def parse_echo(proto: Proto) -> Any:
    """(method, request message) from an EchoResponse JSON body."""

    def parse(body: dict[str, Any], message_type: str) -> tuple[str, Any]:
        message = getattr(proto.pb2, message_type)()
        text_format.Parse(body["requestText"], message)
        return body["method"], message

    return parse


@pytest.fixture(scope="session")
def code_numbers() -> Iterator[dict[str, int]]:
    yield {name: number for name, number in code_pb2.Code.items()}


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def venv_bin(repo_root: Path) -> Path:
    return Path(os.environ.get("VIRTUAL_ENV", repo_root / ".venv")) / "bin"
