"""The gateway as a process and in front of the Kaireon services: /healthz,
the standalone `kaireon-gateway` entry point, product routes, settings."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from grpc_health.v1 import health_pb2

from kaireon_server.gateway import DEFAULT_SERVICES, GatewayServer, GatewaySettings
from kaireon_server.platform.errors import ConfigurationError


async def test_healthz_follows_the_grpc_health_service(
    gateway: str, http: aiohttp.ClientSession, backend: Any
) -> None:
    async with http.get(gateway + "/healthz") as response:
        assert response.status == 200
        assert await response.json() == {"status": "SERVING"}
    await backend.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    try:
        async with http.get(gateway + "/healthz") as response:
            assert response.status == 503
            assert await response.json() == {"status": "NOT_SERVING"}
    finally:
        await backend.health.set("", health_pb2.HealthCheckResponse.SERVING)
    async with http.post(gateway + "/healthz") as response:
        assert response.status == 405
        assert response.headers["Allow"] == "GET, HEAD, OPTIONS"


@pytest.fixture(scope="module")
async def kaireon_gateway(backend: Any) -> AsyncIterator[str]:
    """The five Kaireon services, in front of a server that implements none."""
    server = GatewayServer(backend.target, list(DEFAULT_SERVICES), GatewaySettings())
    port = await server.start("127.0.0.1", 0)
    yield f"http://127.0.0.1:{port}"
    await server.stop()


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", "/api/v1/gdpr/erasure", {"customerId": "cust_12345"}, 501),
        ("POST", "/api/v1/gdpr/erasure", {"customerId": 5}, 400),
        ("POST", "/api/v1/flow/runs/r1:retry", {}, 501),
        ("POST", "/api/v1/flow/runs/r1:clearCheckpoints", None, 501),
        ("GET", "/api/v1/flow/runs/r1", None, 501),
        ("PUT", "/api/v1/flow/runs/r1", None, 405),
        ("POST", "/api/v1/audit:verify", None, 501),
        ("GET", "/api/v1/dsar?status=completed", None, 501),
        ("GET", "/api/v1/dsar/d1/export", None, 501),
        ("GET", "/api/v1/dsar/d1/watch", None, 501),
        ("GET", "/api/v1/decisions/t1/provenance", None, 501),
        ("GET", "/api/v1/flow/runs?state=RUN_STATE_NOPE", None, 400),
        ("GET", "/api/v1/unknown", None, 404),
    ],
)
async def test_kaireon_routes_reach_their_rpcs(
    kaireon_gateway: str,
    http: aiohttp.ClientSession,
    method: str,
    path: str,
    body: Any,
    status: int,
) -> None:
    """The test server implements none of them, so a routed call comes back
    UNIMPLEMENTED (501) from gRPC itself: proof the route reached the RPC."""
    async with http.request(method, kaireon_gateway + path, json=body) as response:
        assert response.status == status
        text = await response.text()
    if status == 501:
        assert '"code":12' in text


def test_settings_from_env() -> None:
    settings = GatewaySettings.from_env(
        {
            "KAIREON_HTTP_PORT": "9090",
            "KAIREON_GATEWAY_STRICT_JSON": "true",
            "KAIREON_GATEWAY_MAX_BODY_BYTES": "1024",
            "KAIREON_GATEWAY_DEFAULT_TIMEOUT_SECONDS": "2.5",
        }
    )
    assert settings.http_port == 9090
    assert settings.strict_json is True
    assert settings.max_body_bytes == 1024
    assert settings.default_timeout_seconds == 2.5
    defaults = GatewaySettings.from_env({})
    assert defaults == GatewaySettings()
    assert defaults.http_port == 8080 and defaults.default_timeout_seconds == 30.0
    assert GatewaySettings.from_env({"KAIREON_HTTP_PORT": "off"}).http_port is None
    no_deadline = {"KAIREON_GATEWAY_DEFAULT_TIMEOUT_SECONDS": "0"}
    assert GatewaySettings.from_env(no_deadline).default_timeout_seconds is None
    for bad in (
        {"KAIREON_GATEWAY_STRICT_JSON": "maybe"},
        {"KAIREON_GATEWAY_MAX_BODY_BYTES": "lots"},
        {"KAIREON_GATEWAY_MAX_BODY_BYTES": "0"},
        {"KAIREON_HTTP_PORT": "70000"},
        {"KAIREON_GATEWAY_DEFAULT_TIMEOUT_SECONDS": "-1"},
        {"KAIREON_GATEWAY_HEADER_TIMEOUT_SECONDS": "0"},
        {"KAIREON_TRUSTED_PROXIES": "10.0.0.1/8"},
    ):
        with pytest.raises(ConfigurationError, match=r"KAIREON|max_body_bytes"):
            GatewaySettings.from_env(bad)


def test_standalone_entry_point_refuses_a_bad_setting(venv_bin: Path) -> None:
    """One line naming the variable and exit status 2, as kaireon-server does."""
    env = {**os.environ, "KAIREON_HTTP_PORT": "70000"}
    done = subprocess.run(
        [str(venv_bin / "kaireon-gateway"), "--grpc-target", "127.0.0.1:1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("kaireon-gateway: configuration error: KAIREON_HTTP_PORT")
    assert "Traceback" not in done.stderr


@pytest.mark.slow
async def test_standalone_entry_point(backend: Any, venv_bin: Path) -> None:
    """`kaireon-gateway --grpc-target` in its own process, port from the env."""
    env = {**os.environ, "KAIREON_HTTP_PORT": "0", "KAIREON_GATEWAY_STRICT_JSON": "true"}
    process = await asyncio.create_subprocess_exec(
        str(venv_bin / "kaireon-gateway"),
        "--grpc-target",
        backend.target,
        "--host",
        "127.0.0.1",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
        match = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
        assert match, line
        base = f"http://127.0.0.1:{match.group(1)}"
        async with aiohttp.ClientSession() as http:
            async with http.get(base + "/healthz") as response:
                assert response.status == 200
            async with http.post(base + "/api/v1/gdpr/erasure", json={"customerId": "c"}) as r:
                assert r.status == 501
            # Strict mode came from the environment.
            async with http.post(base + "/api/v1/gdpr/erasure", json={"bogus": 1}) as r:
                assert r.status == 400
            async with http.get(base + "/openapi.json") as response:
                assert "/api/v1/gdpr/erasure" in (await response.json())["paths"]
    finally:
        process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(process.wait(), 30)
    assert code == 0, (await process.stderr.read()).decode() if process.stderr else ""
