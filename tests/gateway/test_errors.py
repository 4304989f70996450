"""Error mapping: gRPC status -> HTTP status and google.rpc.Status JSON, and
the gateway's own 400/404/405/413 answers."""

from __future__ import annotations

import json
import socket
from typing import Any

import aiohttp
import pytest
from yarl import URL

from kaireon_server.gateway import GatewayServer, GatewaySettings

SMALL_LIMIT = 64 * 1024  # the `gateway` fixture's max_body_bytes

# grpc-gateway runtime/errors.go HTTPStatusFromCode, written out independently.
EXPECTED_HTTP = {
    1: 499,  # CANCELLED
    2: 500,  # UNKNOWN
    3: 400,  # INVALID_ARGUMENT
    4: 504,  # DEADLINE_EXCEEDED
    5: 404,  # NOT_FOUND
    6: 409,  # ALREADY_EXISTS
    7: 403,  # PERMISSION_DENIED
    8: 429,  # RESOURCE_EXHAUSTED
    9: 400,  # FAILED_PRECONDITION
    10: 409,  # ABORTED
    11: 400,  # OUT_OF_RANGE
    12: 501,  # UNIMPLEMENTED
    13: 500,  # INTERNAL
    14: 503,  # UNAVAILABLE
    15: 500,  # DATA_LOSS
    16: 401,  # UNAUTHENTICATED
}


@pytest.mark.parametrize(("code", "status"), sorted(EXPECTED_HTTP.items()))
async def test_every_grpc_code_maps_like_grpc_gateway(
    gateway: str, http: aiohttp.ClientSession, code: int, status: int
) -> None:
    async with http.post(gateway + "/v1/fail", json={"code": code, "message": "boom"}) as response:
        assert response.status == status
        assert response.headers["Content-Type"] == "application/json"
        assert await response.json() == {"code": code, "message": "boom", "details": []}
        challenge = response.headers.get("WWW-Authenticate")
    assert (challenge == "boom") is (code == 16)


async def test_rich_status_details_are_decoded(gateway: str, http: aiohttp.ClientSession) -> None:
    request = {"code": 9, "message": "customer is on legal hold", "withDetails": True}
    async with http.post(gateway + "/v1/fail", json=request) as response:
        assert response.status == 400
        body = await response.json()
    assert body["code"] == 9
    assert body["message"] == "customer is on legal hold"
    assert body["details"] == [
        {
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "TEST_REASON",
            "domain": "gwtest.example",
            "metadata": {"k": "v"},
        },
        {
            "@type": "type.googleapis.com/google.rpc.BadRequest",
            "fieldViolations": [
                {
                    "field": "customer_id",
                    "description": "must not be empty",
                    "reason": "",
                }
            ],
        },
        # A detail type the gateway does not know stays readable.
        {"@type": "type.googleapis.com/gwtest.Unknown", "value": "AQ=="},
    ]


async def _error(
    http: aiohttp.ClientSession, method: str, url: str | URL, **kwargs: Any
) -> tuple[int, dict[str, Any], Any]:
    async with http.request(method, url, **kwargs) as response:
        assert response.headers["Content-Type"] == "application/json"
        return response.status, await response.json(), response.headers


async def test_unknown_path_is_404(gateway: str, http: aiohttp.ClientSession) -> None:
    for path in ("/nope", "/v1/things", "/v1/things/1/extra", "/", "/v1/shelves/1/books"):
        status, body, _ = await _error(http, "GET", gateway + path)
        assert status == 404, path
        assert body == {"code": 5, "message": "Not Found", "details": []}


async def test_wrong_method_is_405_with_allow(gateway: str, http: aiohttp.ClientSession) -> None:
    status, body, headers = await _error(http, "PUT", gateway + "/v1/things/1")
    assert status == 405
    assert headers["Allow"] == "DELETE, GET, OPTIONS"
    assert body == {"code": 12, "message": "Method Not Allowed", "details": []}
    # POST under the registered verb, GET with the colon taken literally.
    status, _, headers = await _error(http, "DELETE", gateway + "/v1/tasks/7:cancel")
    assert status == 405
    assert headers["Allow"] == "GET, POST, OPTIONS"


async def test_wrong_method_is_501_in_grpc_gateway_mode(
    strict_gateway: str, http: aiohttp.ClientSession
) -> None:
    status, body, headers = await _error(http, "PUT", strict_gateway + "/v1/things/1")
    assert status == 501
    assert body["code"] == 12
    assert headers["Allow"] == "DELETE, GET, OPTIONS"


async def test_options_never_fails(gateway: str, http: aiohttp.ClientSession) -> None:
    async with http.options(gateway + "/v1/things/1") as response:
        assert response.status == 204
        assert response.headers["Allow"] == "DELETE, GET, OPTIONS"
    async with http.options(gateway + "/healthz") as response:
        assert response.status == 204
    async with http.options(gateway + "/nowhere") as response:
        assert response.status == 404


async def test_oversized_body_is_413(gateway: str, http: aiohttp.ClientSession) -> None:
    big = json.dumps({"name": "x" * (SMALL_LIMIT + 1)})
    status, body, _ = await _error(http, "POST", gateway + "/v1/echo", data=big)
    assert status == 413
    assert body["code"] == 8 and str(SMALL_LIMIT) in body["message"]

    async def chunks() -> Any:
        # No Content-Length: the limit applies while reading.
        for _ in range(SMALL_LIMIT // 1024 + 2):
            yield b" " * 1024

    status, body, _ = await _error(http, "POST", gateway + "/v1/echo", data=chunks())
    assert status == 413
    # Just under the limit is fine.
    ok = json.dumps({"name": "x" * (SMALL_LIMIT - 100)})
    async with http.post(gateway + "/v1/echo", data=ok) as response:
        assert response.status == 200


BAD_REQUESTS = [
    ("malformed-json", "POST", "/v1/echo", b'{"name": '),
    ("json-array-for-body-star", "POST", "/v1/echo", b"[1, 2]"),
    ("not-utf8", "POST", "/v1/echo", b'{"name": "\xff\xfe"}'),
    (
        "json-deeper-than-the-parser",
        "POST",
        "/v1/echo",
        b'{"attrs":' + b"[" * 10_000 + b"]" * 10_000 + b"}",
    ),
    (
        "struct-deeper-than-json-format",
        "POST",
        "/v1/echo",
        b'{"anyValue":' + b"[" * 500 + b"]" * 500 + b"}",
    ),
    ("wrong-type-for-field", "POST", "/v1/echo", b'{"int32Value": "abc"}'),
    ("string-for-nested-message", "POST", "/v1/echo", b'{"nested": {"child": "x"}}'),
    ("string-in-repeated-messages", "POST", "/v1/echo", b'{"nestedList": [{}, "x"]}'),
    ("repeated-not-a-list", "POST", "/v1/echo", b'{"tags": "x"}'),
    ("int32-overflow", "POST", "/v1/echo", b'{"int32Value": 99999999999}'),
    ("bad-timestamp", "POST", "/v1/echo", b'{"when": "yesterday"}'),
    ("body-field-wrong-shape", "POST", "/v1/publishers/p1/books", b'"just a string"'),
    ("bad-percent-escape-in-path", "GET", "/v1/messages/a%zz", None),
    ("non-utf8-escape-in-path", "GET", "/v1/messages/%ff", None),
    ("singular-query-twice", "GET", "/v1/query?name=a&name=b", None),
    ("same-field-by-both-names", "GET", "/v1/query?int32_value=1&int32Value=2", None),
    ("bad-bool", "GET", "/v1/query?boolValue=yes", None),
    ("bad-int", "GET", "/v1/query?int32Value=1.5", None),
    ("bad-enum", "GET", "/v1/query?color=PURPLE", None),
    ("two-oneof-members", "GET", "/v1/query?choiceA=a&choiceB=1", None),
    ("message-from-query", "GET", "/v1/query?nested=x", None),
    ("map-without-key", "GET", "/v1/query?labels=x", None),
    ("brackets-on-non-map", "GET", "/v1/query?name[a]=x", None),
    ("bad-struct-json", "GET", "/v1/query?attrs=%7Bnope", None),
    ("bad-duration", "GET", "/v1/query?wait=forever", None),
    ("bad-path-int", "GET", "/v1/query/n/l/notanumber/1", None),
    ("bad-grpc-timeout", "GET", "/v1/things/1", None),
    ("non-ascii-forwarded-header", "GET", "/v1/things/1", None),
    ("bad-base64-bin-metadata", "GET", "/v1/things/1", None),
]
_HEADERS = {
    "bad-grpc-timeout": {"Grpc-Timeout": "10 seconds"},
    "non-ascii-forwarded-header": {"X-Tenant-Id": "t\u00e9"},
    "bad-base64-bin-metadata": {"Grpc-Metadata-Blob-Bin": "!!!"},
}


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [case[1:] for case in BAD_REQUESTS],
    ids=[case[0] for case in BAD_REQUESTS],
)
async def test_bad_requests_are_400_with_status_json(
    gateway: str,
    http: aiohttp.ClientSession,
    request: pytest.FixtureRequest,
    method: str,
    path: str,
    body: bytes | None,
) -> None:
    case = request.node.callspec.id
    headers = _HEADERS.get(case, {})
    status, payload, _ = await _error(
        http, method, URL(gateway + path, encoded=True), data=body, headers=headers
    )
    assert status == 400, payload
    assert payload["code"] == 3
    assert payload["message"]
    assert payload["details"] == []


async def test_strict_mode_rejects_unknown_fields(
    gateway: str, lenient_gateway: str, strict_gateway: str, http: aiohttp.ClientSession
) -> None:
    # Strict is the default (the `gateway` fixture sets nothing about it).
    for base, expected in ((lenient_gateway, 200), (gateway, 400), (strict_gateway, 400)):
        async with http.post(base + "/v1/echo", json={"name": "a", "bogus": 1}) as response:
            assert response.status == expected
        async with http.post(base + "/v1/echo", json={"nested": {"bogus": 1}}) as response:
            assert response.status == expected
        # Unknown enum names are unknown values: dropped like unknown fields
        # (protojson's DiscardUnknown does the same).
        async with http.post(base + "/v1/echo", json={"color": "COLOR_PURPLE"}) as response:
            assert response.status == expected
            if expected == 200:
                assert (await response.json())["color"] == "COLOR_UNSPECIFIED"
        async with http.get(base + "/v1/query?name=a&bogus=1") as response:
            assert response.status == expected
            if expected == 400:
                assert "bogus" in (await response.json())["message"]
    # Known fields, by either name, still pass in strict mode.
    async with http.post(strict_gateway + "/v1/echo", json={"int32_value": 1, "renamed": "r"}) as r:
        assert r.status == 200


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_unreachable_backend_is_503(proto: Any, http: aiohttp.ClientSession) -> None:
    gateway = GatewayServer(
        f"127.0.0.1:{_free_port()}",
        [proto.pb2.DESCRIPTOR],
        GatewaySettings(default_timeout_seconds=5.0, health_timeout_seconds=1.0),
    )
    port = await gateway.start("127.0.0.1", 0)
    try:
        async with http.get(f"http://127.0.0.1:{port}/v1/things/1") as response:
            assert response.status == 503
            body = await response.json()
            assert body["code"] == 14 and body["details"] == []
        async with http.get(f"http://127.0.0.1:{port}/healthz") as response:
            assert response.status == 503
            assert (await response.json())["status"].startswith("UNREACHABLE")
    finally:
        await gateway.stop()


async def test_encoded_newline_in_a_path_gets_the_json_404(gateway: str) -> None:
    import aiohttp

    async with aiohttp.ClientSession() as http:
        async with http.get(f"{gateway}/no/such%0Apath") as response:
            assert response.status == 404
            assert response.headers["Content-Type"].startswith("application/json")
            assert (await response.json())["code"] == 5
