"""Slow and idle clients are cut, through real sockets (short timeouts via env):

- REST: header drip, body drip and idle connections are closed within the
  configured timeouts (KAIREON_GATEWAY_HEADER_TIMEOUT_SECONDS /
  _BODY_TIMEOUT_SECONDS); oversized headers are refused;
- gRPC: an idle connection gets GOAWAY (max connection idle), an old one is
  closed after max age + grace, and a TCP connection that never speaks HTTP/2
  is dropped after the handshake timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from kaireon_server.app import App
from kaireon_server.gateway.settings import GatewaySettings
from kaireon_server.platform.config import Settings
from kaireon_server.platform.errors import ConfigurationError

TIMEOUT = 1.0
# Generous: the machine is shared and noisy; the point is "closed", not "never".
SLACK = 3.0


@pytest.fixture
async def slow_app(server_env: dict[str, str]) -> AsyncIterator[App]:
    env = {
        **server_env,
        "KAIREON_GATEWAY_HEADER_TIMEOUT_SECONDS": str(TIMEOUT),
        "KAIREON_GATEWAY_BODY_TIMEOUT_SECONDS": str(TIMEOUT),
        "KAIREON_GRPC_MAX_CONNECTION_IDLE_SECONDS": str(TIMEOUT),
        "KAIREON_GRPC_MAX_CONNECTION_AGE_SECONDS": "2",
        "KAIREON_GRPC_MAX_CONNECTION_AGE_GRACE_SECONDS": str(TIMEOUT),
        "KAIREON_GRPC_HANDSHAKE_TIMEOUT_SECONDS": str(TIMEOUT),
    }
    app = App(Settings.from_env(env))
    await app.start()
    yield app
    await app.stop(grace=1)


async def closed_after(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, drip: bytes | None
) -> tuple[float, bytes]:
    """Seconds until the server closes the connection (EOF or reset) while the
    client writes `drip` every 0.1 s; and what the server sent."""
    started = time.monotonic()
    received = bytearray()

    async def dripping() -> None:
        while drip is not None:
            await asyncio.sleep(0.1)
            writer.write(drip)
            await writer.drain()

    dripper = asyncio.create_task(dripping())
    try:
        async with asyncio.timeout(TIMEOUT + 30):
            while chunk := await reader.read(65536):
                received += chunk
    except ConnectionError:
        pass
    finally:
        dripper.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError, OSError):
            await dripper
        writer.close()
    return time.monotonic() - started, bytes(received)


async def test_rest_header_drip_is_closed_within_the_header_timeout(slow_app: App) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", slow_app.http_port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n")
    elapsed, received = await closed_after(reader, writer, b"X-Drip: a\r\n")
    print(f"header drip closed after {elapsed:.2f} s (timeout {TIMEOUT} s)")
    assert received == b""  # no request was ever complete
    assert TIMEOUT * 0.9 <= elapsed < TIMEOUT + SLACK, elapsed


async def test_rest_body_drip_gets_408_within_the_body_timeout(slow_app: App, tenant: str) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", slow_app.http_port)
    writer.write(
        b"POST /api/v1/gdpr/erasure HTTP/1.1\r\nHost: localhost\r\n"
        b"Content-Type: application/json\r\nContent-Length: 100000\r\n"
        b"X-Tenant-Id: " + tenant.encode() + b"\r\nX-User-Role: admin\r\n\r\n{"
    )
    elapsed, received = await closed_after(reader, writer, b" ")
    print(f"body drip closed after {elapsed:.2f} s (timeout {TIMEOUT} s)")
    assert received.startswith(b"HTTP/1.1 408 "), received[:200]
    assert TIMEOUT * 0.9 <= elapsed < TIMEOUT + SLACK, elapsed


async def test_rest_body_drip_on_a_route_without_body_is_cut_too(
    slow_app: App, tenant: str
) -> None:
    """The handler answers without reading; aiohttp then drains the rest of the
    body for at most the body timeout (its lingering time), not forever."""
    reader, writer = await asyncio.open_connection("127.0.0.1", slow_app.http_port)
    writer.write(
        b"POST /api/v1/audit:verify HTTP/1.1\r\nHost: localhost\r\n"
        b"Content-Type: application/json\r\nContent-Length: 100000\r\n"
        b"X-Tenant-Id: " + tenant.encode() + b"\r\nX-User-Role: admin\r\n\r\n{"
    )
    elapsed, received = await closed_after(reader, writer, b" ")
    print(f"body drip (no-body route) closed after {elapsed:.2f} s (timeout {TIMEOUT} s)")
    assert received.startswith(b"HTTP/1.1 200 "), received[:200]
    assert elapsed < TIMEOUT + SLACK, elapsed


async def test_two_hundred_idle_connections_are_closed_within_the_timeout(slow_app: App) -> None:
    connections = [
        await asyncio.open_connection("127.0.0.1", slow_app.http_port) for _ in range(200)
    ]
    # And one that was served once, then went idle (keep-alive).
    reader, writer = await asyncio.open_connection("127.0.0.1", slow_app.http_port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert (await reader.readuntil(b"\r\n")).startswith(b"HTTP/1.1 200")
    connections.append((reader, writer))
    times = await asyncio.gather(*(closed_after(r, w, None) for r, w in connections))
    longest = max(elapsed for elapsed, _ in times)
    print(f"201 idle connections all closed within {longest:.2f} s (timeout {TIMEOUT} s)")
    assert longest < TIMEOUT + SLACK, longest


async def test_rest_oversized_headers_are_refused(slow_app: App) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", slow_app.http_port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n")
    status = await asyncio.wait_for(reader.readuntil(b"\r\n"), 10)
    writer.close()
    assert status.split()[1] == b"400", status  # aiohttp: "Got more than 8190 bytes"


async def test_an_idle_grpc_connection_gets_goaway(slow_app: App) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{slow_app.grpc_port}") as channel:
        await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert channel.get_state() == grpc.ChannelConnectivity.READY
        started = time.monotonic()
        # GOAWAY moves a client channel from READY back to IDLE.
        async with asyncio.timeout(TIMEOUT + SLACK):
            while channel.get_state() == grpc.ChannelConnectivity.READY:
                await channel.wait_for_state_change(grpc.ChannelConnectivity.READY)
        elapsed = time.monotonic() - started
        print(f"idle gRPC connection: GOAWAY after {elapsed:.2f} s (idle limit {TIMEOUT} s)")
        assert channel.get_state() == grpc.ChannelConnectivity.IDLE


async def test_a_grpc_connection_is_closed_after_max_age_and_grace(slow_app: App) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{slow_app.grpc_port}") as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            async with asyncio.timeout(2 + TIMEOUT + SLACK):
                while True:  # no more states come: the watch ends with the connection
                    await watch.read()
        elapsed = time.monotonic() - started
        print(f"watch on an old connection ended after {elapsed:.2f} s (age 2 s + grace 1 s)")
        assert ended.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_tcp_connection_that_never_speaks_http2_is_dropped(slow_app: App) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", slow_app.grpc_port)
    elapsed, _ = await closed_after(reader, writer, None)
    print(f"silent gRPC connection dropped after {elapsed:.2f} s (handshake timeout {TIMEOUT} s)")
    assert elapsed < TIMEOUT + SLACK, elapsed


@pytest.mark.parametrize("value", ["0", "-1", "soon"])
def test_bad_gateway_timeouts_are_refused(value: str) -> None:
    for name in ("KAIREON_GATEWAY_HEADER_TIMEOUT_SECONDS", "KAIREON_GATEWAY_BODY_TIMEOUT_SECONDS"):
        with pytest.raises(ConfigurationError, match=name):
            GatewaySettings.from_env({name: value})
