"""Headers <-> metadata both ways, HttpBody bodies, deadlines and cancellation."""

from __future__ import annotations

import asyncio
import base64
import uuid
from typing import Any

import aiohttp
import pytest


async def test_request_headers_become_metadata(
    gateway: str, http: aiohttp.ClientSession, parse_echo: Any
) -> None:
    headers = {
        "X-Tenant-Id": "tenant-1",
        "X-User-Role": "admin",
        "Authorization": "Bearer abc.def",
        "Grpc-Metadata-Foo": "bar",
        "Grpc-Metadata-Blob-Bin": base64.b64encode(b"\x00\x01\xff").decode(),
        "Grpc-Metadata-Grpc-Timeout": "1S",  # gRPC's own keys are never forwarded
        "Grpc-Metadata-Content-Type": "text/plain",
        "X-Other": "dropped",
        "Cookie": "session=dropped",
        "X-Forwarded-For": "203.0.113.9",
    }
    async with http.get(gateway + "/v1/things/1", headers=headers) as response:
        assert response.status == 200
        body = await response.json()
    metadata = body["metadata"]
    assert metadata["x-tenant-id"] == "tenant-1"
    assert metadata["x-user-role"] == "admin"
    assert metadata["authorization"] == "Bearer abc.def"
    assert metadata["foo"] == "bar"
    assert metadata["blob-bin"] == "b64:" + base64.b64encode(b"\x00\x01\xff").decode()
    assert metadata["x-forwarded-for"] == "203.0.113.9, 127.0.0.1"
    assert metadata["x-forwarded-host"] == gateway.removeprefix("http://")
    for absent in ("x-other", "cookie", "grpc-timeout", "grpc-metadata-foo"):
        assert absent not in metadata


async def test_response_metadata_becomes_headers(gateway: str, http: aiohttp.ClientSession) -> None:
    request = {
        "replyHeaders": {"x-a": "1", "x-provenance-digest": "d1"},
        "replyTrailers": {"x-t": "2", "x-provenance-signature": "sig"},
    }
    async with http.post(gateway + "/v1/meta", json=request) as response:
        assert response.status == 200
        headers = response.headers
    assert headers["Grpc-Metadata-X-A"] == "1"
    # The allow-list goes out under its own name, from headers and trailers.
    assert headers["X-Provenance-Digest"] == "d1"
    assert headers["X-Provenance-Signature"] == "sig"
    assert "Grpc-Metadata-X-Provenance-Digest" not in headers
    assert "Grpc-Metadata-X-T" not in headers  # other trailers are not headers


async def test_trailers_only_error_keeps_passthrough_headers(
    gateway: str, http: aiohttp.ClientSession
) -> None:
    request = {"replyHeaders": {"x-provenance-schema": "kaireon.provenance.v1"}, "failCode": 5}
    async with http.post(gateway + "/v1/meta", json=request) as response:
        assert response.status == 404
        assert response.headers["X-Provenance-Schema"] == "kaireon.provenance.v1"
        assert await response.json() == {"code": 5, "message": "meta failed", "details": []}


async def test_error_after_headers_keeps_header_metadata(
    gateway: str, http: aiohttp.ClientSession
) -> None:
    request = {
        "replyHeaders": {"x-a": "1", "x-provenance-digest": "d"},
        "failCode": 7,
        "sendHeadersFirst": True,
    }
    async with http.post(gateway + "/v1/meta", json=request) as response:
        assert response.status == 403
        assert response.headers["Grpc-Metadata-X-A"] == "1"
        assert response.headers["X-Provenance-Digest"] == "d"


async def test_http_body_response_field(gateway: str, http: aiohttp.ClientSession) -> None:
    async with http.get(gateway + "/v1/blobs/1") as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/csv; charset=utf-8"
        assert await response.read() == b"a,b\n1,2\n"
        # Response metadata, e.g. the provenance headers, comes along verbatim.
        assert response.headers["X-Provenance-Schema"] == "kaireon.provenance.v1"
        assert response.headers["X-Provenance-Digest"] == "ab" * 32
        assert response.headers["X-Provenance-Signature"] == "unsigned"
        assert response.headers["Grpc-Metadata-X-Other"] == "o"


async def test_http_body_as_whole_response(gateway: str, http: aiohttp.ClientSession) -> None:
    async with http.get(gateway + "/v1/raw/1") as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "image/png"
        assert await response.read() == bytes(range(256))


async def test_http_body_request_field(
    gateway: str, http: aiohttp.ClientSession, parse_echo: Any
) -> None:
    payload = b"%PDF-1.7\x00\xff not json"
    headers = {"Content-Type": "application/pdf"}
    async with http.post(gateway + "/v1/uploads/u1", data=payload, headers=headers) as response:
        assert response.status == 200
        _, message = parse_echo(await response.json(), "UploadRequest")
    assert message.id == "u1"
    assert message.file.content_type == "application/pdf"
    assert message.file.data == payload


async def _remaining(http: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> float:
    async with http.post(url, json={"seconds": 0, "tag": "t"}, headers=headers) as response:
        assert response.status == 200
        return float((await response.json())["timeoutRemaining"])


def _slack(seconds: float) -> float:
    """gRPC rounds the grpc-timeout it puts on the wire up, by up to about 1 %."""
    return seconds * 1.01 + 0.1


@pytest.mark.parametrize(
    ("header", "low", "high"),
    [("5S", 4.0, 5.0), ("500m", 0.0, 0.5), ("2M", 110.0, 120.0), ("1H", 3500.0, 3600.0)],
)
async def test_grpc_timeout_header_sets_the_deadline(
    gateway: str, http: aiohttp.ClientSession, header: str, low: float, high: float
) -> None:
    remaining = await _remaining(http, gateway + "/v1/slow", {"Grpc-Timeout": header})
    assert low < remaining <= _slack(high)


async def test_default_deadline_is_configurable(
    gateway: str, strict_gateway: str, http: aiohttp.ClientSession
) -> None:
    assert 29.0 < await _remaining(http, gateway + "/v1/slow", {}) <= _slack(30.0)
    assert 1.0 < await _remaining(http, strict_gateway + "/v1/slow", {}) <= _slack(2.0)


async def test_expired_deadline_is_504(gateway: str, http: aiohttp.ClientSession) -> None:
    headers = {"Grpc-Timeout": "100m"}
    async with http.post(gateway + "/v1/slow", json={"seconds": 5}, headers=headers) as response:
        assert response.status == 504
        assert (await response.json())["code"] == 4


async def test_client_disconnect_cancels_the_grpc_call(gateway: str, backend: Any) -> None:
    tag = uuid.uuid4().hex
    started = backend.state.event(backend.state.started, tag)
    cancelled = backend.state.event(backend.state.cancelled, tag)
    session = aiohttp.ClientSession()

    async def call() -> None:
        async with session.post(gateway + "/v1/slow", json={"seconds": 60, "tag": tag}) as r:
            await r.read()

    task = asyncio.create_task(call())
    await asyncio.wait_for(started.wait(), 5)
    task.cancel()
    await session.close()  # the TCP connection goes away with the session
    await asyncio.wait_for(cancelled.wait(), 5)
    assert task.cancelled()
