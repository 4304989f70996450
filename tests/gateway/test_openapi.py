"""/openapi.json: valid OpenAPI 3, built from the same descriptors, and the
gateway's real responses validate against it."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest
from openapi_schema_validator import OAS30Validator
from openapi_spec_validator import validate

from kaireon_server.gateway import DEFAULT_SERVICES, build_openapi, build_routes


@pytest.fixture(scope="module")
async def spec(gateway: str, http: aiohttp.ClientSession) -> dict[str, Any]:
    async with http.get(gateway + "/openapi.json") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("application/json")
        document: dict[str, Any] = await response.json()
    return document


def _check(spec: dict[str, Any], schema: dict[str, Any], instance: Any) -> None:
    """Validates with the document's components in scope for $ref."""
    OAS30Validator({**schema, "components": spec["components"]}).validate(instance)


def test_test_proto_spec_is_valid_openapi_3(spec: dict[str, Any]) -> None:
    validate(spec)
    assert spec["openapi"].startswith("3.")


def test_paths_parameters_and_bodies(spec: dict[str, Any]) -> None:
    paths = spec["paths"]
    # Verbs stay in the path; NoHttp (no annotation) and SEARCH (no OpenAPI
    # operation for custom methods) are absent.
    assert "post" in paths["/v1/tasks/{task}:cancel"]
    assert not any("NoHttp" in json.dumps(item) for item in paths.values())
    assert "/v1/search" not in paths
    # Multi-segment variables expand, so GetBook and GetTask keep separate paths.
    book = paths["/v1/shelves/{shelve}/books/{book}"]["get"]
    assert book["operationId"] == "TestService_GetBook"
    assert [p["name"] for p in book["parameters"] if p["in"] == "path"] == ["shelve", "book"]
    query = {p["name"]: p for p in book["parameters"] if p["in"] == "query"}
    assert set(query) == {"tags", "view"}
    assert query["tags"]["schema"] == {"type": "array", "items": {"type": "string"}}
    assert query["view"]["schema"] == {"$ref": "#/components/schemas/gwtest.v1.Color"}
    assert "get" in paths["/v1/tasks/{task}"]
    # Single-segment variables keep the field name; nested query names are dotted.
    message = paths["/v1/messages/{message_id}"]["get"]
    names = [p["name"] for p in message["parameters"]]
    # The recursive sub.child stops at its first repetition.
    assert names == ["message_id", "revision", "sub.label", "sub.count", "sub.tags"]
    assert {
        "name": "revision",
        "in": "query",
        "schema": {"type": "string", "format": "int64", "pattern": "^-?[0-9]+$"},
    } in message["parameters"]
    # body "*" and no query parameters; path fields left out of the body schema.
    cancel = paths["/v1/tasks/{task}:cancel"]["post"]
    assert [p["in"] for p in cancel["parameters"]] == ["path"]
    body = cancel["requestBody"]["content"]["application/json"]["schema"]
    assert set(body["properties"]) == {"reason", "x"}
    # body "field": the field's schema; response_body: the field's schema.
    create = paths["/v1/publishers/{publisher}/books"]["post"]
    assert create["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/gwtest.v1.Book"
    }
    inner = paths["/v1/inner/{id}"]["get"]["responses"]["200"]["content"]["application/json"]
    assert inner["schema"] == {"$ref": "#/components/schemas/gwtest.v1.Nested"}
    # additional_bindings each get an operation.
    assert paths["/v1/alt/things/{id}"]["get"]["operationId"] == "TestService_GetThing2"
    assert paths["/v1/things/{id}:fetch"]["post"]["operationId"] == "TestService_GetThing3"


def test_every_operation_documents_the_error_schema(spec: dict[str, Any]) -> None:
    status = spec["components"]["schemas"]["google.rpc.Status"]
    assert set(status["properties"]) == {"code", "message", "details"}
    for path, item in spec["paths"].items():
        if path in ("/healthz", "/openapi.json"):
            continue
        for operation in item.values():
            content = operation["responses"]["default"]["content"]
            if "application/x-ndjson" in content:  # a JSON stream failing before its first line
                line = content["application/x-ndjson"]["schema"]
                assert line["properties"]["error"] == {
                    "$ref": "#/components/schemas/google.rpc.Status"
                }
            error = content["application/json"]
            assert error["schema"] == {"$ref": "#/components/schemas/google.rpc.Status"}


def test_streams_and_http_bodies_are_documented(spec: dict[str, Any]) -> None:
    watch = spec["paths"]["/v1/watch/{id}"]["get"]["responses"]["200"]["content"]
    line = watch["application/x-ndjson"]["schema"]
    assert line["properties"]["result"] == {"$ref": "#/components/schemas/gwtest.v1.WatchResponse"}
    assert line["properties"]["error"] == {"$ref": "#/components/schemas/google.rpc.Status"}
    for path in ("/v1/chunks/{id}", "/v1/blobs/{id}", "/v1/raw/{id}"):
        content = spec["paths"][path]["get"]["responses"]["200"]["content"]
        assert content == {"*/*": {"schema": {"type": "string", "format": "binary"}}}
    upload = spec["paths"]["/v1/uploads/{id}"]["post"]["requestBody"]["content"]
    assert upload == {"*/*": {"schema": {"type": "string", "format": "binary"}}}


async def test_real_responses_match_their_schemas(
    spec: dict[str, Any], gateway: str, http: aiohttp.ClientSession
) -> None:
    echo = spec["paths"]["/v1/echo"]["post"]
    ok_schema = echo["responses"]["200"]["content"]["application/json"]["schema"]
    error_schema = echo["responses"]["default"]["content"]["application/json"]["schema"]
    request = {
        "name": "n",
        "int64Value": "-5",
        "color": "COLOR_RED",
        "nested": {"child": {"label": "c"}},
        "nestedList": [{"tags": ["t"]}],
        "labels": {"a": "b"},
        "counts": {"x": 1},
        "when": "2024-01-02T03:04:05Z",
        "wait": "2s",
        "big": "7",
        "attrs": {"a": {"b": [1]}},
        "anyValue": "s",
        "maybe": 3,
        "choiceB": 2,
        "times": ["2024-01-02T03:04:05Z"],
    }
    _check(spec, echo["requestBody"]["content"]["application/json"]["schema"], request)
    async with http.post(gateway + "/v1/echo", json=request) as response:
        _check(spec, ok_schema, await response.json())
    async with http.post(gateway + "/v1/echo", data=b"{") as response:
        _check(spec, error_schema, await response.json())
    fail = {"code": 9, "message": "m", "withDetails": True}
    async with http.post(gateway + "/v1/fail", json=fail) as response:
        _check(spec, error_schema, await response.json())
    watch = spec["paths"]["/v1/watch/{id}"]["get"]["responses"]["200"]["content"]
    async with http.get(gateway + "/v1/watch/w?count=2&failCode=10") as response:
        for line in (await response.read()).splitlines():
            _check(spec, watch["application/x-ndjson"]["schema"], json.loads(line))
    # A mismatch is caught: the check is not vacuous.
    with pytest.raises(Exception, match="is not of type"):
        _check(spec, ok_schema, {"int64Value": 5})


def test_kaireon_services_spec_is_valid() -> None:
    spec = build_openapi(build_routes(list(DEFAULT_SERVICES)))
    validate(spec)
    paths = spec["paths"]
    erasure = paths["/api/v1/gdpr/erasure"]["post"]
    assert erasure["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/kaireon.erasure.v1.EraseCustomerRequest"
    }
    counts = spec["components"]["schemas"]["kaireon.erasure.v1.DeletedCounts"]["properties"]
    assert counts["interactionHistory"] == {"type": "integer", "format": "int32"}
    provenance = paths["/api/v1/decisions/{decision_id}/provenance"]["get"]["responses"]["200"]
    assert "*/*" in provenance["content"]
    dsar_list = {p["name"] for p in paths["/api/v1/dsar"]["get"]["parameters"]}
    assert {"status", "pageSize", "pageToken"} <= dsar_list
    assert (
        "application/x-ndjson"
        in paths["/api/v1/dsar/{id}/watch"]["get"]["responses"]["200"]["content"]
    )
    assert "post" in paths["/api/v1/flow/runs/{run_id}:retry"]
    assert "post" in paths["/api/v1/audit:verify"]
    get_run = paths["/api/v1/flow/runs/{run_id}"]["get"]["responses"]["200"]["content"]
    assert get_run["application/json"]["schema"] == {
        "$ref": "#/components/schemas/kaireon.flow.v1.Run"
    }
