"""A very long deadline is a long deadline, not an expired one.

gRPC turns a timeout past about 7e9 seconds into an overflowed deadline that
has already passed: every call failed at once with DEADLINE_EXCEEDED (504).
Both ways to ask for one hit it: the Grpc-Timeout header (its spec allows
99999999H, ~3.6e11 s) and an operator's "effectively no limit" default
(KAIREON_GATEWAY_DEFAULT_TIMEOUT_SECONDS=1e12). The gateway caps what it hands
to gRPC instead."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from kaireon_server.gateway.headers import MAX_DEADLINE_SECONDS
from kaireon_server.gateway.server import GatewayServer
from kaireon_server.gateway.settings import GatewaySettings
from tests.gateway.conftest import Backend, Proto


async def _remaining(http: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> float:
    async with http.post(url, json={"seconds": 0, "tag": "t"}, headers=headers) as response:
        assert response.status == 200, await response.text()
        return float((await response.json())["timeoutRemaining"])


@pytest.mark.parametrize("header", ["99999999H", "99999999M", "99999999S"])
async def test_a_huge_grpc_timeout_header_is_a_long_deadline(
    gateway: str, http: aiohttp.ClientSession, header: str
) -> None:
    remaining = await _remaining(http, gateway + "/v1/slow", {"Grpc-Timeout": header})
    assert remaining > 1e6


@pytest.fixture
async def unbounded_gateway(backend: Backend, proto: Proto) -> AsyncIterator[str]:
    settings = GatewaySettings.from_env({"KAIREON_GATEWAY_DEFAULT_TIMEOUT_SECONDS": "1e12"})
    server = GatewayServer(backend.target, [proto.pb2.DESCRIPTOR], settings)
    await server.start("127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        await server.stop()


async def test_a_huge_default_timeout_is_a_long_deadline(
    unbounded_gateway: str, http: aiohttp.ClientSession
) -> None:
    remaining = await _remaining(http, unbounded_gateway + "/v1/slow", {})
    assert 1e6 < remaining <= MAX_DEADLINE_SECONDS * 1.01
