"""TLS and mTLS on the gRPC server, with a throwaway CA generated at test time."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import grpc
import pytest

from kaireon.audit.v1 import audit_pb2
from kaireon_client import ClientConfig, KaireonClient
from kaireon_server.app import App
from kaireon_server.platform.config import Settings
from kaireon_server.platform.errors import ConfigurationError
from tests.support.certs import make_tls_files


@pytest.fixture
async def tls_app(server_env, tmp_path):
    files = make_tls_files(tmp_path)
    env = {
        **server_env,
        "KAIREON_TLS_CERT": str(files.server_cert),
        "KAIREON_TLS_KEY": str(files.server_key),
        "KAIREON_TLS_CLIENT_CA": str(files.ca_cert),
    }
    app = App(Settings.from_env(env))
    await app.start()
    yield app, files
    await app.stop(grace=1)


def _verify(config: ClientConfig) -> audit_pb2.VerifyChainResponse:
    with KaireonClient(config) as client:
        return client.audit.VerifyChain(audit_pb2.VerifyChainRequest(), timeout=10)


async def test_mtls_client_is_served(tls_app, tenant) -> None:
    app, files = tls_app
    config = ClientConfig(
        target=f"localhost:{app.grpc_port}",
        tenant=tenant,
        role="admin",
        ca_cert=files.ca_cert,
        client_cert=files.client_cert,
        client_key=files.client_key,
    )
    reply = await asyncio.to_thread(_verify, config)
    assert reply.valid


async def test_client_without_certificate_is_refused(tls_app, tenant) -> None:
    app, files = tls_app
    config = ClientConfig(
        target=f"localhost:{app.grpc_port}", tenant=tenant, role="admin", ca_cert=files.ca_cert
    )
    with pytest.raises(grpc.RpcError) as info:
        await asyncio.to_thread(_verify, config)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_plaintext_client_is_refused(tls_app, tenant) -> None:
    app, _ = tls_app
    config = ClientConfig(
        target=f"localhost:{app.grpc_port}", tenant=tenant, role="admin", timeout=3
    )
    with pytest.raises(grpc.RpcError) as info:
        await asyncio.to_thread(_verify, config)
    assert info.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def test_half_tls_configuration_is_rejected(server_env, tmp_path) -> None:
    files = make_tls_files(tmp_path)
    with pytest.raises(ConfigurationError):
        Settings.from_env({**server_env, "KAIREON_TLS_CERT": str(files.server_cert)})


async def test_rest_adapter_serves_https_with_client_certificates(tls_app, tenant) -> None:
    import ssl

    import aiohttp

    app, files = tls_app
    assert app.http_port > 0
    url = f"https://localhost:{app.http_port}/api/v1/audit:verify"
    headers = {"X-Tenant-Id": tenant, "X-User-Role": "admin"}
    context = ssl.create_default_context(cafile=str(files.ca_cert))
    context.load_cert_chain(files.client_cert, files.client_key)
    async with aiohttp.ClientSession() as http:
        async with http.post(url, headers=headers, ssl=context) as response:
            assert response.status == 200
            assert (await response.json())["valid"] is True
        no_cert = ssl.create_default_context(cafile=str(files.ca_cert))
        with pytest.raises(aiohttp.ClientError):
            async with http.post(url, headers=headers, ssl=no_cert) as response:
                await response.read()
        with pytest.raises(aiohttp.ClientError):
            async with http.post(url.replace("https", "http"), headers=headers) as response:
                await response.read()


async def test_the_cli_speaks_mtls(tls_app, tenant) -> None:
    """The `kaireon` CLI with --ca-cert/--client-cert/--client-key; without them, refused."""
    app, files = tls_app
    kaireon = str(Path(sys.executable).parent / "kaireon")
    base = [kaireon, "--target", f"localhost:{app.grpc_port}", "--tenant", tenant]
    base += ["--role", "admin", "--timeout", "10"]
    tls = ["--ca-cert", str(files.ca_cert), "--client-cert", str(files.client_cert)]
    tls += ["--client-key", str(files.client_key)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAIREON_")}

    async def run(*argv: str) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env
        )
        out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
        assert proc.returncode is not None
        return proc.returncode, out.decode(), err.decode()

    code, out, err = await run(*base, *tls, "--json", "audit", "verify")
    assert code == 0, err
    assert json.loads(out)["valid"] is True
    code, _, err = await run(*base, "--ca-cert", str(files.ca_cert), "audit", "verify")
    assert code == 1 and "UNAVAILABLE" in err
