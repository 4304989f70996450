"""Descriptor helpers and text -> proto3 JSON conversion of path and query values."""

from __future__ import annotations

import json
import re
from decimal import Decimal, InvalidOperation
from typing import Any

from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor

HTTP_BODY = "google.api.HttpBody"
FIELD_MASK = "google.protobuf.FieldMask"

_WRAPPERS = frozenset(
    f"google.protobuf.{name}"
    for name in (
        "DoubleValue",
        "FloatValue",
        "Int64Value",
        "UInt64Value",
        "Int32Value",
        "UInt32Value",
        "BoolValue",
        "StringValue",
        "BytesValue",
    )
)
# Well-known types whose proto3 JSON form is not an object of their fields.
SPECIAL_JSON = frozenset(
    {
        "google.protobuf.Any",
        "google.protobuf.Duration",
        "google.protobuf.FieldMask",
        "google.protobuf.ListValue",
        "google.protobuf.Struct",
        "google.protobuf.Timestamp",
        "google.protobuf.Value",
        *_WRAPPERS,
    }
)
_JSON_TEXT = frozenset(
    {"google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue"}
)
_STRING_FORM = frozenset(
    {"google.protobuf.Timestamp", "google.protobuf.FieldMask", "google.protobuf.Duration"}
)

# A number given as text (path, query, a JSON string): ASCII proto3 JSON only.
# json_format hands such strings to int()/float(), which also take "1_000",
# surrounding whitespace and other scripts' digits ("\u0663" is 3): values that a
# proxy in front, or any other reader, would not take for the same number.
_NUMERIC_TYPES = frozenset(
    {
        FieldDescriptor.TYPE_INT32,
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_UINT32,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_SINT32,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_FIXED32,
        FieldDescriptor.TYPE_FIXED64,
        FieldDescriptor.TYPE_SFIXED32,
        FieldDescriptor.TYPE_SFIXED64,
        FieldDescriptor.TYPE_FLOAT,
        FieldDescriptor.TYPE_DOUBLE,
    }
)
_FLOAT_TYPES = frozenset({FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE})
_NUMBER_TEXT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_FLOAT_WORDS = frozenset({"NaN", "Infinity", "-Infinity"})

_GO_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_GO_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})
_GO_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h)")
_DURATION_UNITS = {
    "ns": Decimal("1e-9"),
    "us": Decimal("1e-6"),
    "µs": Decimal("1e-6"),
    "μs": Decimal("1e-6"),
    "ms": Decimal("1e-3"),
    "s": Decimal(1),
    "m": Decimal(60),
    "h": Decimal(3600),
}


def message_of(field: FieldDescriptor) -> Descriptor:
    """The message type of a message field."""
    desc = field.message_type
    if desc is None:
        raise TypeError(f"{field.full_name} is not a message field")
    return desc


def enum_of(field: FieldDescriptor) -> EnumDescriptor:
    """The enum type of an enum field."""
    desc = field.enum_type
    if desc is None:
        raise TypeError(f"{field.full_name} is not an enum field")
    return desc


def is_map(field: FieldDescriptor) -> bool:
    return field.message_type is not None and field.message_type.GetOptions().map_entry


def is_message(field: FieldDescriptor) -> bool:
    return field.type == FieldDescriptor.TYPE_MESSAGE


def is_plain_message(field: FieldDescriptor) -> bool:
    """A message whose JSON is an object of its own fields (not a WKT, not a map)."""
    return (
        is_message(field) and not is_map(field) and message_of(field).full_name not in SPECIAL_JSON
    )


def real_oneof(field: FieldDescriptor) -> str | None:
    """The name of the field's oneof, unless it is a proto3 `optional` one."""
    oneof = field.containing_oneof
    if oneof is None:
        return None
    if len(oneof.fields) == 1 and oneof.name == "_" + field.name and field.has_presence:
        return None
    return oneof.name


_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


def key_part(key: str) -> str:
    """A JSON key as one step of a field path in an error message.

    Identifier-like keys are named; others (caller data of any length and
    content) are shown as [?] so an error never echoes megabytes or control
    characters back.
    """
    return f".{key}" if _PLAIN_KEY.fullmatch(key) else "[?]"


def join_path(where: str, key: str) -> str:
    part = key_part(key)
    return (where + part) if where else part.lstrip(".")


def find_field(desc: Descriptor, name: str) -> FieldDescriptor | None:
    """A field by proto name or JSON name, as grpc-gateway accepts both."""
    field = desc.fields_by_name.get(name)
    if field is not None:
        return field
    for candidate in desc.fields:
        if candidate.json_name == name:
            return candidate
    return None


def resolve_path(desc: Descriptor, names: tuple[str, ...]) -> list[FieldDescriptor] | None:
    """Resolves a dotted field path through singular plain messages."""
    chain: list[FieldDescriptor] = []
    current: Descriptor | None = desc
    for name in names:
        if current is None:
            return None
        field = find_field(current, name)
        if field is None:
            return None
        chain.append(field)
        current = message_of(field) if is_plain_message(field) and not field.is_repeated else None
    return chain


def number_field(field: FieldDescriptor) -> FieldDescriptor | None:
    """The scalar numeric field a value of `field` is checked as: the field
    itself, or the `value` of a numeric wrapper (Int64Value...); else None."""
    if field.type in _NUMERIC_TYPES:
        return field
    if is_message(field) and message_of(field).full_name in _WRAPPERS:
        inner = message_of(field).fields_by_name["value"]
        return inner if inner.type in _NUMERIC_TYPES else None
    return None


def check_number_text(field: FieldDescriptor, text: str) -> None:
    """ValueError unless `text` is a proto3 JSON number in ASCII (or NaN /
    Infinity / -Infinity for a float); `field` is a numeric scalar field."""
    if _NUMBER_TEXT.fullmatch(text):
        return
    if field.type in _FLOAT_TYPES and text in _FLOAT_WORDS:
        return
    shown = text if len(text) <= 40 else text[:40] + "..."
    raise ValueError(f"{field.name}: {shown!r} is not a number")


def text_to_json(field: FieldDescriptor, text: str) -> Any:
    """Converts one path or query value to the proto3 JSON value json_format parses.

    Raises ValueError with a caller-facing message.
    """
    if field.type == FieldDescriptor.TYPE_BOOL:
        return parse_go_bool(text)
    if field.type == FieldDescriptor.TYPE_ENUM:
        # Numbers and names both; json_format checks the name.
        return int(text) if re.fullmatch(r"-?[0-9]+", text) else text
    numeric = number_field(field)
    if numeric is not None:
        check_number_text(numeric, text)
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return _message_from_text(field, text)
    # Numbers, strings and base64 bytes: proto3 JSON accepts them as strings.
    return text


def _message_from_text(field: FieldDescriptor, text: str) -> Any:
    full_name = message_of(field).full_name
    if full_name == "google.protobuf.BoolValue":
        return parse_go_bool(text)
    if full_name == "google.protobuf.Duration":
        return go_duration_to_json(text)
    if full_name in _WRAPPERS or full_name in _STRING_FORM:
        return text
    if full_name in _JSON_TEXT:
        try:
            return json.loads(text)
        except ValueError:
            raise ValueError(f"{field.name}: not valid JSON text") from None
    raise ValueError(f"{field.name}: a {full_name} cannot be set from a query parameter")


def parse_go_bool(text: str) -> bool:
    """Go's strconv.ParseBool, which grpc-gateway uses for query values."""
    if text in _GO_TRUE:
        return True
    if text in _GO_FALSE:
        return False
    raise ValueError(f"invalid boolean {text!r}")


def go_duration_to_json(text: str) -> str:
    """Accepts Go durations ("1m30s", "250ms") and proto3 JSON ("1.5s")."""
    sign = "-" if text.startswith("-") else ""
    rest = text.lstrip("+-")
    pos = 0
    total = Decimal(0)
    for part in _GO_DURATION_PART.finditer(rest):
        if part.start() != pos:
            break
        try:
            total += Decimal(part.group(1)) * _DURATION_UNITS[part.group(2)]
        except InvalidOperation:
            break
        pos = part.end()
    if pos != len(rest) or not rest:
        return text  # let json_format report it
    seconds = format(total.normalize(), "f") if total else "0"
    return f"{sign}{seconds}s"
