"""Server streaming over HTTP: NDJSON read line by line with a real client."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import aiohttp
import pytest


async def _line(response: aiohttp.ClientResponse) -> Any:
    raw = await asyncio.wait_for(response.content.readline(), 5)
    assert raw.endswith(b"\n"), raw
    return json.loads(raw)


async def test_lines_arrive_while_the_stream_is_open(
    gateway: str, http: aiohttp.ClientSession, backend: Any
) -> None:
    watch_id = uuid.uuid4().hex
    url = f"{gateway}/v1/watch/{watch_id}?count=3&waitGate=true"
    async with http.get(url) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "application/x-ndjson"
        # The server holds the stream open until the gate opens, so this line
        # can only arrive if the gateway flushes per message.
        first = await _line(response)
        assert first == {"result": {"seq": 0, "id": watch_id, "big": str(2**53)}}
        assert not response.content.at_eof()
        backend.state.event(backend.state.gates, watch_id).set()
        assert await _line(response) == {
            "result": {"seq": 1, "id": watch_id, "big": str(2**53 + 1)}
        }
        assert (await _line(response))["result"]["seq"] == 2
        assert await response.content.read() == b""


async def test_error_after_messages_is_a_final_error_line(
    gateway: str, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{gateway}/v1/watch/w?count=2&failCode=9") as response:
        assert response.status == 200
        lines = (await response.read()).splitlines()
    assert [json.loads(line) for line in lines] == [
        {"result": {"seq": 0, "id": "w", "big": str(2**53)}},
        {"result": {"seq": 1, "id": "w", "big": str(2**53 + 1)}},
        {"error": {"code": 9, "message": "watch failed", "details": []}},
    ]


async def test_error_before_first_message_gets_the_mapped_status(
    gateway: str, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{gateway}/v1/watch/w?count=0&failCode=5") as response:
        assert response.status == 404
        body = await response.read()
    assert body.endswith(b"\n")
    assert json.loads(body) == {"error": {"code": 5, "message": "watch failed", "details": []}}


async def test_empty_stream(gateway: str, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{gateway}/v1/watch/w?count=0") as response:
        assert response.status == 200
        assert await response.read() == b""


async def test_stream_deadline_ends_with_an_error_line(
    gateway: str, http: aiohttp.ClientSession
) -> None:
    headers = {"Grpc-Timeout": "300m"}
    async with http.get(f"{gateway}/v1/watch/w?count=1&forever=true", headers=headers) as response:
        assert response.status == 200
        lines = [json.loads(line) for line in (await response.read()).splitlines()]
    assert len(lines) > 2
    assert all("result" in line for line in lines[:-1])
    assert lines[-1]["error"]["code"] == 4


async def test_client_disconnect_cancels_the_stream(gateway: str, backend: Any) -> None:
    watch_id = uuid.uuid4().hex
    cancelled = backend.state.event(backend.state.cancelled, watch_id)
    async with aiohttp.ClientSession() as session:
        response = await session.get(f"{gateway}/v1/watch/{watch_id}?count=1&forever=true")
        assert (await _line(response))["result"]["seq"] == 0
        response.close()  # drop the connection mid-stream
    await asyncio.wait_for(cancelled.wait(), 5)


async def test_http_body_stream_is_raw_concatenated_bytes(
    gateway: str, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{gateway}/v1/chunks/x") as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "application/json"
        assert await response.read() == b'{"part":"one"}'


async def test_http_body_stream_failure_cuts_the_body(
    gateway: str, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{gateway}/v1/chunks/x?failCode=13") as response:
        assert response.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()
