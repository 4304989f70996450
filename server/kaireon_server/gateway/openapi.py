"""OpenAPI 3.0 document generated from the same routes the gateway serves.

Follows protoc-gen-openapiv2's conventions: lowerCamelCase properties, 64-bit
integers as strings, enums as names, a google.rpc.Status default response,
and streams documented as lines of {"result": ..., "error": ...}.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.rpc import status_pb2

from kaireon_server.gateway.fields import enum_of, is_map, is_plain_message, message_of
from kaireon_server.gateway.routes import Route
from kaireon_server.gateway.templates import Segment, SegmentKind

OPENAPI_VERSION = "3.0.3"
STATUS_SCHEMA = "google.rpc.Status"
_JSON_TEXT = frozenset(
    {"google.protobuf.Struct", "google.protobuf.ListValue", "google.protobuf.Value"}
)
_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})
_BINARY = {"schema": {"type": "string", "format": "binary"}}
_INT64 = {"type": "string", "format": "int64", "pattern": "^-?[0-9]+$"}
_UINT64 = {"type": "string", "format": "uint64", "pattern": "^[0-9]+$"}
_SCALARS: dict[int, dict[str, Any]] = {
    FieldDescriptor.TYPE_DOUBLE: {"type": "number", "format": "double"},
    FieldDescriptor.TYPE_FLOAT: {"type": "number", "format": "float"},
    FieldDescriptor.TYPE_INT64: _INT64,
    FieldDescriptor.TYPE_SINT64: _INT64,
    FieldDescriptor.TYPE_SFIXED64: _INT64,
    FieldDescriptor.TYPE_UINT64: _UINT64,
    FieldDescriptor.TYPE_FIXED64: _UINT64,
    FieldDescriptor.TYPE_INT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_SINT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_UINT32: {"type": "integer", "format": "int64", "minimum": 0},
    FieldDescriptor.TYPE_FIXED32: {"type": "integer", "format": "int64", "minimum": 0},
    FieldDescriptor.TYPE_BOOL: {"type": "boolean"},
    FieldDescriptor.TYPE_STRING: {"type": "string"},
    FieldDescriptor.TYPE_BYTES: {"type": "string", "format": "byte"},
}
_WRAPPED = {
    "DoubleValue": FieldDescriptor.TYPE_DOUBLE,
    "FloatValue": FieldDescriptor.TYPE_FLOAT,
    "Int64Value": FieldDescriptor.TYPE_INT64,
    "UInt64Value": FieldDescriptor.TYPE_UINT64,
    "Int32Value": FieldDescriptor.TYPE_INT32,
    "UInt32Value": FieldDescriptor.TYPE_UINT32,
    "BoolValue": FieldDescriptor.TYPE_BOOL,
    "StringValue": FieldDescriptor.TYPE_STRING,
    "BytesValue": FieldDescriptor.TYPE_BYTES,
}
_WKT: dict[str, dict[str, Any]] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "example": "1.5s"},
    "google.protobuf.FieldMask": {"type": "string", "example": "field_a,field_b.sub"},
    "google.protobuf.Struct": {"type": "object", "additionalProperties": True},
    "google.protobuf.Value": {"description": "Any JSON value."},
    "google.protobuf.ListValue": {"type": "array", "items": {}},
    "google.protobuf.Empty": {"type": "object"},
    "google.protobuf.Any": {
        "type": "object",
        "properties": {"@type": {"type": "string"}},
        "additionalProperties": True,
    },
    **{f"google.protobuf.{name}": dict(_SCALARS[kind]) for name, kind in _WRAPPED.items()},
}


class _Schemas:
    """components/schemas, filled on demand as messages are referenced."""

    def __init__(self) -> None:
        self.schemas: dict[str, dict[str, Any]] = {}

    def ref(self, name: str) -> dict[str, Any]:
        return {"$ref": f"#/components/schemas/{name}"}

    def message(self, desc: Descriptor) -> dict[str, Any]:
        name = desc.full_name
        if name not in self.schemas:
            if name in _WKT:
                self.schemas[name] = dict(_WKT[name])
            else:
                self.schemas[name] = {}  # placeholder: recursive messages terminate
                self.schemas[name] = self.object_schema(desc)
        return self.ref(name)

    def object_schema(self, desc: Descriptor, skip: frozenset[str] = frozenset()) -> dict[str, Any]:
        properties = {
            field.json_name: self.field(field) for field in desc.fields if field.name not in skip
        }
        return {"type": "object", "properties": properties}

    def enum(self, desc: EnumDescriptor) -> dict[str, Any]:
        if desc.full_name not in self.schemas:
            names = [value.name for value in desc.values]
            self.schemas[desc.full_name] = {"type": "string", "enum": names}
        return self.ref(desc.full_name)

    def field(self, field: FieldDescriptor) -> dict[str, Any]:
        if is_map(field):
            value = message_of(field).fields_by_name["value"]
            return {"type": "object", "additionalProperties": self.single(value)}
        schema = self.single(field)
        return {"type": "array", "items": schema} if field.is_repeated else schema

    def single(self, field: FieldDescriptor) -> dict[str, Any]:
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            return self.message(message_of(field))
        if field.type == FieldDescriptor.TYPE_ENUM:
            return self.enum(enum_of(field))
        return dict(_SCALARS[field.type])


def build_openapi(
    routes: Sequence[Route], *, title: str = "Kaireon compliance plane", version: str = "v1"
) -> dict[str, Any]:
    """The OpenAPI document of the routes plus /healthz and /openapi.json."""
    schemas = _Schemas()
    schemas.message(status_pb2.Status.DESCRIPTOR)
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        method = route.http_method.lower()
        if method not in _METHODS:
            continue  # custom HTTP methods have no OpenAPI operation
        # On an identical path the later route wins, as in the router.
        path, path_params = _path(route, schemas)
        paths.setdefault(path, {})[method] = _operation(route, schemas, path_params)
    paths.update(_fixed_paths())
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": title,
            "version": version,
            "description": "REST adapter generated from the google.api.http annotations.",
        },
        "paths": dict(sorted(paths.items())),
        "components": {"schemas": dict(sorted(schemas.schemas.items()))},
    }


def _operation(
    route: Route, schemas: _Schemas, path_params: list[dict[str, Any]]
) -> dict[str, Any]:
    rule = f"{route.http_method} {route.template.source}"
    operation: dict[str, Any] = {
        "operationId": route.operation_id,
        "tags": [route.method.containing_service.full_name],
        "summary": route.method.full_name,
        "description": f"HTTP rule: {rule}",
        "parameters": path_params + _query_parameters(route, schemas),
        "responses": {
            "200": _success(route, schemas),
            "default": _failure(route, schemas),
        },
    }
    body = _request_body(route, schemas)
    if body is not None:
        operation["requestBody"] = body
    if route.server_streaming:
        operation["description"] += (
            '. Server stream: newline-delimited JSON, one {"result": ...} line per message, '
            'and a final {"error": ...} line if the stream fails.'
        )
    return operation


def _path(route: Route, schemas: _Schemas) -> tuple[str, list[dict[str, Any]]]:
    """The OpenAPI path of a template and its path parameters.

    A variable over several segments without "**" is expanded, as openapiv2's
    expand_slashed_path_patterns does: /v1/{name=shelves/*/books/*} becomes
    /v1/shelves/{shelf}/books/{book}, so two such routes under one prefix do
    not collapse into the same /v1/{name}.
    """
    template = route.template
    parts: list[str] = []
    params: list[dict[str, Any]] = []
    used: set[str] = set()
    index = 0
    while index < len(template.segments):
        var = next((v for v in template.variables if v.start == index), None)
        if var is None:
            segment = template.segments[index]
            parts.append(_segment_text(segment))
            index += 1
            continue
        dotted = ".".join(var.field_path)
        segments = template.segments[var.start : var.end]
        if len(segments) == 1 or any(s.kind is SegmentKind.DEEP for s in segments):
            used.add(dotted)
            parts.append("{" + dotted + "}")
            param = _path_param(dotted, schemas.single(_leaf(route.input_type, var.field_path)))
            if var.pattern != "*":
                param["description"] = f"{dotted}: matches {var.pattern}."
            params.append(param)
        else:
            previous = ""
            for segment in segments:
                if segment.kind is SegmentKind.LITERAL:
                    parts.append(segment.literal)
                    previous = segment.literal
                    continue
                name = _unique(_singular(previous) or dotted, used)
                parts.append("{" + name + "}")
                param = _path_param(name, {"type": "string"})
                param["description"] = f"One segment of {dotted} ({var.pattern})."
                params.append(param)
                previous = ""
        index = var.end
    path = "/" + "/".join(parts)
    return (f"{path}:{template.verb}" if template.verb else path), params


def _path_param(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema}


def _segment_text(segment: Segment) -> str:
    if segment.kind is SegmentKind.LITERAL:
        return segment.literal
    return "**" if segment.kind is SegmentKind.DEEP else "*"


def _singular(word: str) -> str:
    if word.endswith("ies"):
        return word[:-3] + "y"
    return word[:-1] if word.endswith("s") and len(word) > 1 else word


def _unique(name: str, used: set[str]) -> str:
    candidate, n = name, 2
    while candidate in used:
        candidate, n = f"{name}{n}", n + 1
    used.add(candidate)
    return candidate


def _leaf(desc: Descriptor, names: tuple[str, ...]) -> FieldDescriptor:
    field = desc.fields_by_name[names[0]]
    for name in names[1:]:
        field = message_of(field).fields_by_name[name]
    return field


def _query_parameters(route: Route, schemas: _Schemas) -> list[dict[str, Any]]:
    if route.body == "*":
        return []  # grpc-gateway parses no query parameters with body "*"
    params: list[dict[str, Any]] = []
    for field, name in _query_fields(route.input_type, (), (), route.bound_paths, frozenset()):
        param: dict[str, Any] = {
            "name": name,
            "in": "query",
            "schema": _query_schema(field, schemas),
        }
        if field.is_repeated:
            param.update(style="form", explode=True)
        params.append(param)
    return params


def _query_fields(
    desc: Descriptor,
    proto_prefix: tuple[str, ...],
    json_prefix: tuple[str, ...],
    bound: list[tuple[str, ...]],
    visiting: frozenset[str],
) -> Iterator[tuple[FieldDescriptor, str]]:
    """Leaf fields settable from the query, with their dotted JSON names."""
    visiting = visiting | {desc.full_name}
    for field in desc.fields:
        proto_path = (*proto_prefix, field.name)
        json_path = (*json_prefix, field.json_name)
        if any(proto_path[: len(b)] == b for b in bound) or is_map(field):
            continue
        if is_plain_message(field):
            sub = message_of(field)
            # Recursive messages stop at their first repetition.
            if not field.is_repeated and sub.full_name not in visiting:
                yield from _query_fields(sub, proto_path, json_path, bound, visiting)
            continue
        if field.type == FieldDescriptor.TYPE_MESSAGE and message_of(field).full_name in (
            "google.protobuf.Any",
            "google.protobuf.Empty",
        ):
            continue
        yield field, ".".join(json_path)


def _query_schema(field: FieldDescriptor, schemas: _Schemas) -> dict[str, Any]:
    if field.type != FieldDescriptor.TYPE_MESSAGE:
        item = schemas.single(field)
    elif message_of(field).full_name in _JSON_TEXT:
        item = {"type": "string", "description": "JSON text."}
    else:  # Timestamp, Duration, FieldMask, wrappers: their JSON string or scalar
        item = dict(_WKT[message_of(field).full_name])
    return {"type": "array", "items": item} if field.is_repeated else item


def _request_body(route: Route, schemas: _Schemas) -> dict[str, Any] | None:
    if not route.body:
        return None
    if route.raw_request_body:
        return {"required": False, "content": {"*/*": _BINARY}}
    if route.body == "*":
        # Path variables override the body, so the body schema leaves them out.
        top = frozenset(
            var.field_path[0] for var in route.template.variables if len(var.field_path) == 1
        )
        schema = (
            schemas.object_schema(route.input_type, top)
            if top
            else schemas.message(route.input_type)
        )
    else:
        assert route.body_field is not None
        schema = schemas.field(route.body_field)
    return {"required": False, "content": {"application/json": {"schema": schema}}}


def _success(route: Route, schemas: _Schemas) -> dict[str, Any]:
    if route.raw_response_body:
        what = "concatenated chunks" if route.server_streaming else "bytes"
        return {
            "description": f"The raw {what}, with their own content type.",
            "content": {"*/*": _BINARY},
        }
    field = route.response_field
    result = schemas.field(field) if field is not None else schemas.message(route.output_type)
    if not route.server_streaming:
        return {"description": "OK", "content": {"application/json": {"schema": result}}}
    line = {
        "type": "object",
        "properties": {"result": result, "error": schemas.ref(STATUS_SCHEMA)},
    }
    return {
        "description": f"Stream of {route.output_type.full_name}, one JSON object per line.",
        "content": {"application/x-ndjson": {"schema": line}},
    }


def _failure(route: Route, schemas: _Schemas) -> dict[str, Any]:
    status = {"application/json": {"schema": schemas.ref(STATUS_SCHEMA)}}
    if route.server_streaming and not route.raw_response_body:
        # A request the gateway rejects gets the plain Status; a stream whose
        # call fails before its first message answers the mapped status with
        # one NDJSON line, {"error": Status}, as grpc-gateway does.
        line = {
            "type": "object",
            "properties": {"error": schemas.ref(STATUS_SCHEMA)},
            "required": ["error"],
        }
        return {
            "description": "A rejected request (google.rpc.Status), or a call that failed "
            'before its first message (one {"error": Status} line).',
            "content": {**status, "application/x-ndjson": {"schema": line}},
        }
    return {"description": "An error: a google.rpc.Status.", "content": status}


def _fixed_paths() -> dict[str, dict[str, Any]]:
    health = {
        "type": "object",
        "properties": {"status": {"type": "string"}},
    }
    return {
        "/healthz": {
            "get": {
                "operationId": "Gateway_Healthz",
                "tags": ["gateway"],
                "summary": "grpc.health.v1 Check of the gRPC target",
                "responses": {
                    "200": {
                        "description": "SERVING",
                        "content": {"application/json": {"schema": health}},
                    },
                    "503": {
                        "description": "Not serving or unreachable",
                        "content": {"application/json": {"schema": health}},
                    },
                },
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "Gateway_OpenApi",
                "tags": ["gateway"],
                "summary": "This document",
                "responses": {
                    "200": {
                        "description": "OpenAPI 3 document",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
            }
        },
    }
