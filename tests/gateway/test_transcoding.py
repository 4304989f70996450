"""HTTP request -> gRPC request message, one row per rule kind.

Each row goes over a real socket: aiohttp client -> gateway -> grpc.aio test
server, which answers with the text form of the request it received.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest
from google.protobuf import text_format
from yarl import URL

# (id, HTTP method, path with query, JSON body or None, RPC, request type,
#  expected request in text format)
CASES: list[tuple[str, str, str, Any, str, str, str]] = [
    # Path templates and precedence.
    (
        "var-and-nested-query",
        "GET",
        "/v1/messages/123?revision=2&sub.label=foo",
        None,
        "GetMessage",
        "GetMessageRequest",
        'message_id: "123" revision: 2 sub { label: "foo" }',
    ),
    (
        "literal-beats-variable",
        "GET",
        "/v1/messages/special?revision=1",
        None,
        "GetSpecialMessage",
        "GetMessageRequest",
        "revision: 1",
    ),
    (
        "single-segment-var-fully-decoded",
        "GET",
        "/v1/messages/a%2Fb%3Ac%20d%C3%A9",
        None,
        "GetMessage",
        "GetMessageRequest",
        'message_id: "a/b:c d\u00e9"',
    ),
    (
        "trailing-slash-is-empty-var",
        "GET",
        "/v1/messages/",
        None,
        "GetMessage",
        "GetMessageRequest",
        'message_id: ""',
    ),
    (
        "multi-segment-var-repeated-enum-name",
        "GET",
        "/v1/shelves/1/books/2?tags=a&tags=b&view=COLOR_BLUE",
        None,
        "GetBook",
        "GetBookRequest",
        'name: "shelves/1/books/2" tags: "a" tags: "b" view: COLOR_BLUE',
    ),
    (
        "enum-by-number",
        "GET",
        "/v1/shelves/1/books/2?view=1",
        None,
        "GetBook",
        "GetBookRequest",
        'name: "shelves/1/books/2" view: COLOR_RED',
    ),
    (
        "deep-wildcard-keeps-reserved-escapes",
        "GET",
        "/v1/files/a/b%2Fc.txt",
        None,
        "GetFile",
        "GetFileRequest",
        'path: "a/b%2Fc.txt"',
    ),
    (
        "deep-wildcard-decodes-unreserved",
        "GET",
        "/v1/files/dir%20one/x%41y",
        None,
        "GetFile",
        "GetFileRequest",
        'path: "dir one/xAy"',
    ),
    (
        "literal-beats-empty-deep-wildcard",
        "GET",
        "/v1/files",
        None,
        "ListFiles",
        "GetFileRequest",
        "",
    ),
    (
        "verb-with-body-star-ignores-query",
        "POST",
        "/v1/tasks/7:cancel?x=1&reason=q",
        {"reason": "r"},
        "CancelTask",
        "CancelTaskRequest",
        'name: "tasks/7" reason: "r"',
    ),
    (
        "verb-route-with-empty-body",
        "POST",
        "/v1/tasks/7:cancel",
        None,
        "CancelTask",
        "CancelTaskRequest",
        'name: "tasks/7"',
    ),
    (
        "get-on-verb-path-takes-colon-literally",
        "GET",
        "/v1/tasks/7:cancel",
        None,
        "GetTask",
        "CancelTaskRequest",
        'name: "tasks/7:cancel"',
    ),
    (
        "unregistered-verb-is-part-of-segment",
        "GET",
        "/v1/tasks/7:other",
        None,
        "GetTask",
        "CancelTaskRequest",
        'name: "tasks/7:other"',
    ),
    (
        "additional-binding-get",
        "GET",
        "/v1/alt/things/7?version=3",
        None,
        "GetThing",
        "GetThingRequest",
        'id: "7" version: 3',
    ),
    (
        "additional-binding-post-verb-path-overrides-body",
        "POST",
        "/v1/things/7:fetch",
        {"version": 4, "id": "from-body"},
        "GetThing",
        "GetThingRequest",
        'id: "7" version: 4',
    ),
    (
        "same-template-later-declared-wins",
        "GET",
        "/v1/tie/1",
        None,
        "GetThingV1",
        "GetThingRequest",
        'id: "1"',
    ),
    (
        "delete-without-body-rule-ignores-body",
        "DELETE",
        "/v1/things/9",
        {"version": 5},
        "DeleteThing",
        "GetThingRequest",
        'id: "9"',
    ),
    (
        "custom-http-method",
        "SEARCH",
        "/v1/search?name=n",
        None,
        "Search",
        "Everything",
        'name: "n"',
    ),
    (
        "nested-enum-and-int64-path-fields",
        "GET",
        "/v1/query/nm/lbl/-42/COLOR_BLUE",
        None,
        "QueryWithPath",
        "Everything",
        'name: "nm" int64_value: -42 color: COLOR_BLUE nested { label: "lbl" }',
    ),
    (
        "query-ignores-keys-bound-by-path",
        "GET",
        "/v1/query/nm/lbl/1/2?name=other&nested.label=other&nested.count=3",
        None,
        "QueryWithPath",
        "Everything",
        'name: "nm" int64_value: 1 color: COLOR_BLUE nested { label: "lbl" count: 3 }',
    ),
    # body: "field".
    (
        "body-field-path-and-query",
        "POST",
        "/v1/publishers/p1/books?bookId=b9",
        {"title": "X"},
        "CreateBook",
        "CreateBookRequest",
        'parent: "publishers/p1" book_id: "b9" book { title: "X" }',
    ),
    (
        "query-under-body-field-ignored",
        "POST",
        "/v1/publishers/p1/books?book.title=Q&book_id=b1",
        {"title": "X", "author_info": {"age": 3}},
        "CreateBook",
        "CreateBookRequest",
        'parent: "publishers/p1" book_id: "b1" book { title: "X" author_info { age: 3 } }',
    ),
    (
        "patch-fills-empty-update-mask",
        "PATCH",
        "/v1/publishers/p1/books/b9",
        {"title": "Y", "authorInfo": {"name": "Z"}, "unknown": 1},
        "UpdateBook",
        "UpdateBookRequest",
        'book { name: "publishers/p1/books/b9" title: "Y" author_info { name: "Z" } }'
        ' update_mask { paths: "title" paths: "author_info.name" }',
    ),
    (
        "patch-keeps-explicit-mask-and-path-overrides-body",
        "PATCH",
        "/v1/publishers/p1/books/b9?updateMask=title",
        {"name": "from-body", "title": "Y", "authorInfo": {"name": "Z"}},
        "UpdateBook",
        "UpdateBookRequest",
        'book { name: "publishers/p1/books/b9" title: "Y" author_info { name: "Z" } }'
        ' update_mask { paths: "title" }',
    ),
    # Query parameters into the remaining fields.
    (
        "query-scalars",
        "GET",
        "/v1/query?int32Value=5&int64_value=9007199254740993&uint64Value=18446744073709551615"
        "&doubleValue=1.5&floatValue=0.25&boolValue=true&bytesValue=aGk%3D&color=COLOR_RED"
        "&sint=-3&fix=7&u32=4000000000",
        None,
        "Query",
        "Everything",
        "int32_value: 5 int64_value: 9007199254740993 uint64_value: 18446744073709551615"
        ' double_value: 1.5 float_value: 0.25 bool_value: true bytes_value: "hi"'
        " color: COLOR_RED sint: -3 fix: 7 u32: 4000000000",
    ),
    (
        "query-go-bools",
        "GET",
        "/v1/query?boolValue=T&flag=0",
        None,
        "Query",
        "Everything",
        "bool_value: true flag { }",
    ),
    (
        "query-repeated",
        "GET",
        "/v1/query?tags=a&tags=b&colors=COLOR_RED&colors=2&numbers=1&numbers=-2",
        None,
        "Query",
        "Everything",
        'tags: "a" tags: "b" colors: COLOR_RED colors: COLOR_BLUE numbers: 1 numbers: -2',
    ),
    (
        "query-dotted-both-names-and-json-name",
        "GET",
        "/v1/query?renamed=r&nested.child.label=deep&nested.count=3&nested_list.label=x",
        None,
        "Query",
        "Everything",
        'custom_json: "r" nested { count: 3 child { label: "deep" } }',
    ),
    (
        "query-maps",
        "GET",
        "/v1/query?labels%5Ba%5D=x&labels[b]=y&counts[n]=3",
        None,
        "Query",
        "Everything",
        'labels { key: "a" value: "x" } labels { key: "b" value: "y" }'
        ' counts { key: "n" value: 3 }',
    ),
    (
        "query-well-known-types",
        "GET",
        "/v1/query?when=2024-01-02T03:04:05.123Z&wait=1m30.5s&mask=a.b,cD&big=12&flag=true"
        "&note=hi&attrs=%7B%22k%22%3A1%7D&anyValue=%5B1%2C%22x%22%5D"
        "&times=2024-01-01T00:00:00Z&times=2024-01-02T00:00:00Z",
        None,
        "Query",
        "Everything",
        "when { seconds: 1704164645 nanos: 123000000 } wait { seconds: 90 nanos: 500000000 }"
        ' mask { paths: "a.b" paths: "c_d" } big { value: 12 } flag { value: true }'
        ' note { value: "hi" }'
        ' attrs { fields { key: "k" value { number_value: 1 } } }'
        ' any_value { list_value { values { number_value: 1 } values { string_value: "x" } } }'
        " times { seconds: 1704067200 } times { seconds: 1704153600 }",
    ),
    (
        "query-optional-zero-and-oneof",
        "GET",
        "/v1/query?maybe=0&choiceB=7",
        None,
        "Query",
        "Everything",
        "maybe: 0 choice_b: 7",
    ),
    (
        "query-plus-is-space",
        "GET",
        "/v1/query?name=a+b%2Bc",
        None,
        "Query",
        "Everything",
        'name: "a b+c"',
    ),
    (
        "query-unknown-keys-ignored",
        "GET",
        "/v1/query?nope=1&nested.nope=2&name=x",
        None,
        "Query",
        "Everything",
        'name: "x"',
    ),
]


# grpc-gateway's leniency: these drop a query parameter or an unknown field,
# so they pass with KAIREON_GATEWAY_STRICT_JSON=false only (the default is
# strict, and its 400 names what would have been dropped).
LENIENT_ONLY = {
    "verb-with-body-star-ignores-query": "query parameter 'x'",
    "query-ignores-keys-bound-by-path": "query parameter 'name': set by the path",
    "query-under-body-field-ignored": "query parameter 'book.title': set by the path or the body",
    "patch-fills-empty-update-mask": "unknown: unknown field 'unknown'",
    "query-dotted-both-names-and-json-name": "unknown query parameter 'nested_list.label'",
    "query-unknown-keys-ignored": "unknown query parameter 'nope'",
}


@pytest.mark.parametrize(
    ("method", "path", "body", "rpc", "request_type", "expected"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
async def test_request_transcoding(
    request: pytest.FixtureRequest,
    gateway: str,
    lenient_gateway: str,
    http: aiohttp.ClientSession,
    parse_echo: Any,
    proto: Any,
    method: str,
    path: str,
    body: Any,
    rpc: str,
    request_type: str,
    expected: str,
) -> None:
    data = None if body is None else json.dumps(body)
    base = lenient_gateway if request.node.callspec.id in LENIENT_ONLY else gateway
    # encoded=True: send the path exactly as written, escapes included.
    async with http.request(method, URL(base + path, encoded=True), data=data) as response:
        payload = await response.json()
        assert response.status == 200, payload
    got_rpc, message = parse_echo(payload, request_type)
    assert got_rpc == rpc
    want = text_format.Parse(expected, getattr(proto.pb2, request_type)())
    assert message == want, f"got {text_format.MessageToString(message)!r}"


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [case[1:4] for case in CASES if case[0] in LENIENT_ONLY],
    ids=[case[0] for case in CASES if case[0] in LENIENT_ONLY],
)
async def test_strict_default_refuses_what_lenient_mode_drops(
    request: pytest.FixtureRequest,
    gateway: str,
    http: aiohttp.ClientSession,
    method: str,
    path: str,
    body: Any,
) -> None:
    data = None if body is None else json.dumps(body)
    async with http.request(method, URL(gateway + path, encoded=True), data=data) as response:
        payload = await response.json()
        assert response.status == 400, payload
    assert payload["code"] == 3
    assert LENIENT_ONLY[request.node.callspec.id] in payload["message"]


async def test_body_star_output_rendering(
    lenient_gateway: str, http: aiohttp.ClientSession
) -> None:
    """Input takes both names, numbers or strings for int64, enum numbers and
    (lenient mode) ignores unknown fields; output is lowerCamelCase, declaration order, int64
    as strings, enums by name, zero values printed, compact."""
    request = {
        "name": "n",
        "int64_value": 9007199254740993,
        "uint64Value": "18446744073709551615",
        "color": 2,
        "tags": ["a"],
        "nested": {"label": "l", "count": "5"},
        "labels": {"a": "b"},
        "when": "2024-01-02T03:04:05.123Z",
        "wait": "1.5s",
        "mask": "a.b,cD",
        "big": "12",
        "flag": False,
        "attrs": {"k": [1, "x", None]},
        "anyValue": None,
        "maybe": 0,
        "choiceA": "c",
        "renamed": "r",
        "bytesValue": "aGk=",
        "unknownField": {"ignored": True},
    }
    async with http.post(lenient_gateway + "/v1/echo", json=request) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "application/json"
        raw = await response.read()
    assert b"\n" not in raw
    assert b'": ' not in raw
    assert b'", ' not in raw
    out = json.loads(raw)
    expected = {
        "name": "n",
        "int32Value": 0,
        "int64Value": "9007199254740993",
        "uint64Value": "18446744073709551615",
        "doubleValue": 0,
        "floatValue": 0,
        "boolValue": False,
        "bytesValue": "aGk=",
        "color": "COLOR_BLUE",
        "tags": ["a"],
        "colors": [],
        "numbers": [],
        "nested": {"label": "l", "count": "5", "tags": []},
        "nestedList": [],
        "labels": {"a": "b"},
        "counts": {},
        "when": "2024-01-02T03:04:05.123Z",
        "wait": "1.500s",
        "mask": "a.b,cD",
        "big": "12",
        "flag": False,
        "attrs": {"k": [1, "x", None]},
        "anyValue": None,
        "maybe": 0,
        "choiceA": "c",
        "renamed": "r",
        "sint": "0",
        "fix": 0,
        "u32": 0,
        "times": [],
    }
    assert out == expected
    assert list(out) == list(expected), "fields in declaration order"
    assert list(out["nested"]) == ["label", "count", "tags"]


async def test_unset_message_and_optional_fields_are_omitted(
    gateway: str, http: aiohttp.ClientSession
) -> None:
    async with http.post(gateway + "/v1/echo", json={}) as response:
        out = await response.json()
    for absent in ("nested", "when", "wait", "mask", "big", "attrs", "anyValue", "maybe"):
        assert absent not in out
    assert "choiceA" not in out and "choiceB" not in out
    assert out["name"] == "" and out["int64Value"] == "0" and out["color"] == "COLOR_UNSPECIFIED"


async def test_response_body_message_field(gateway: str, http: aiohttp.ClientSession) -> None:
    async with http.get(gateway + "/v1/inner/abc") as response:
        assert await response.json() == {"label": "abc", "count": "0", "tags": []}
    # An unset response_body message prints as its empty message.
    async with http.get(gateway + "/v1/inner/unset") as response:
        assert await response.json() == {"label": "", "count": "0", "tags": []}


async def test_repeated_body_field_and_response_body(
    gateway: str, http: aiohttp.ClientSession
) -> None:
    body = [{"label": "a"}, {"label": "b", "count": 2}]
    async with http.post(gateway + "/v1/echo-field/i1", json=body) as response:
        assert response.status == 200
        assert await response.json() == [
            {"label": "a", "count": "0", "tags": []},
            {"label": "b", "count": "2", "tags": []},
        ]
    async with http.post(gateway + "/v1/echo-field/i1", json={"label": "a"}) as response:
        assert response.status == 400
        assert (await response.json())["code"] == 3
