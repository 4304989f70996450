"""Response message -> HTTP body: proto3 JSON the way grpc-gateway prints it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, cast

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor
from google.protobuf.message import Message

from kaireon_server.gateway.fields import (
    SPECIAL_JSON,
    is_map,
    is_message,
    is_plain_message,
    message_of,
)
from kaireon_server.gateway.routes import Route

JSON_CONTENT_TYPE = "application/json"
OCTET_STREAM = "application/octet-stream"


@dataclass(frozen=True)
class Rendered:
    body: bytes
    content_type: str


def to_json_value(message: Message) -> Any:
    """lowerCamelCase names, int64 as strings, enums by name, zero values printed.

    Fields without presence print their zero value; unset message fields and
    unset `optional` scalars are omitted (protobuf's
    always_print_fields_with_no_presence; grpc-gateway would print null).
    """
    value = json_format.MessageToDict(message, always_print_fields_with_no_presence=True)
    # Well-known types print as strings, lists, ...: nothing to order there.
    return _in_field_order(cast("Descriptor", message.DESCRIPTOR), value)


_FREE_FORM_JSON = frozenset(
    {"google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue"}
)


def _json_key_order(key: str) -> bytes:
    """RFC 8785's property order: by UTF-16 code units (= code points within the BMP)."""
    return key.encode("utf-16-be")


def _keys_sorted(value: Any) -> Any:
    """Free-form JSON (Struct, Value) with its object keys sorted at every depth."""
    if isinstance(value, dict):
        return {k: _keys_sorted(value[k]) for k in sorted(value, key=_json_key_order)}
    if isinstance(value, list):
        return [_keys_sorted(v) for v in value]
    return value


def _in_field_order(desc: Descriptor, value: dict[str, Any]) -> dict[str, Any]:
    """Declaration order, as protojson prints (MessageToDict puts set fields first).

    Map entries and Struct keys come sorted, as Go's protojson prints them (a
    map's iteration order is arbitrary): a message whose fields are declared in
    key order, like DsarExport, thereby prints in RFC 8785 order."""
    if desc.full_name in SPECIAL_JSON:
        return value
    ordered: dict[str, Any] = {}
    for field in desc.fields:
        key = field.json_name
        if key not in value:
            continue
        item = value[key]
        if is_message(field) and message_of(field).full_name in _FREE_FORM_JSON:
            item = _keys_sorted(item)
        elif is_plain_message(field):
            sub = message_of(field)
            item = (
                [_in_field_order(sub, x) for x in item]
                if field.is_repeated
                else _in_field_order(sub, item)
            )
        elif is_map(field):
            entry_value = message_of(field).fields_by_name["value"]
            item = {k: item[k] for k in sorted(item, key=_json_key_order)}
            if is_plain_message(entry_value):
                sub = message_of(entry_value)
                item = {k: _in_field_order(sub, v) for k, v in item.items()}
            elif is_message(entry_value) and message_of(entry_value).full_name in _FREE_FORM_JSON:
                item = _keys_sorted(item)
        ordered[key] = item
    return ordered


_EXACT_FLOAT_LIMIT = 2.0**53


def _plain_numbers(value: Any) -> Any:
    """Integral doubles as integers (121.0 -> 121), as Go's protojson prints them.

    Python's MessageToDict keeps them floats, so Struct values (all doubles)
    and double fields would print as 121.0 where grpc-gateway prints 121."""
    if isinstance(value, float):
        if value.is_integer() and abs(value) < _EXACT_FLOAT_LIMIT:
            return int(value)
        return value
    if isinstance(value, dict):
        return {k: _plain_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain_numbers(v) for v in value]
    return value


def dumps(value: Any) -> bytes:
    """Compact JSON, UTF-8, numbers as protojson prints them."""
    return json.dumps(_plain_numbers(value), separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8"
    )


def render_message(route: Route, message: Message) -> Rendered:
    """The HTTP body of one response message of the route."""
    if route.raw_response_body:
        http_body: Any = getattr(message, route.response_body) if route.response_body else message
        return Rendered(bytes(http_body.data), http_body.content_type or OCTET_STREAM)
    return Rendered(dumps(response_json(route, message)), JSON_CONTENT_TYPE)


def response_json(route: Route, message: Message) -> Any:
    """The JSON value of a response, honouring response_body."""
    field = route.response_field
    if field is None:
        return to_json_value(message)
    if is_message(field) and not field.is_repeated and not is_map(field):
        # An unset field renders as its empty message, with zero values.
        return to_json_value(getattr(message, field.name))
    return to_json_value(message).get(field.json_name)
