"""Input rules that hold for every RPC, checked once by the interceptor.

- A request whose bytes do not decode (corrupt wire format, bad UTF-8,
  nesting beyond the parser's depth limit) is INVALID_ARGUMENT. grpc itself
  would answer UNKNOWN with the parser's text, before any error mapping.
- PostgreSQL text and jsonb cannot hold U+0000, so a NUL in any string of a
  request could only ever fail deep inside a query (as an INTERNAL error); it
  is refused up front instead, naming the field.
- A double or float that is NaN or infinite (a Struct's number values are
  doubles too) has no JSON form: protobuf's JSON conversion raises on it, and
  PostgreSQL jsonb cannot hold it. It is refused up front, naming the field
  (inside a Struct by its JSON path).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from functools import cache
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from kaireon_server.platform.errors import InvalidArgument

_NUL = "\x00"
_FLOATING = (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT)
_JSON_TYPES = ("google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue")
# The two high bytes (little-endian) of every non-finite double (exponent all
# ones) or float: a cheap filter on the serialized request. Text seldom
# matches (never for a double's pattern, 0xF0-0xFF then 0x7F/0xFF, in valid
# UTF-8); varints and bytes may, and then the walk runs and finds nothing.
_NON_FINITE_BYTES = re.compile(rb"[\x80-\xff][\x7f\xff]")
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


def _entry(field: FieldDescriptor) -> Descriptor | None:
    """The entry type of a map field, or None."""
    desc = field.message_type
    return desc if desc is not None and desc.GetOptions().map_entry else None


def find_nul(message: Message, prefix: str = "") -> str | None:
    """The path of the first string (or map key) holding a NUL, or None."""
    for field, value in message.ListFields():
        where = f"{prefix}{field.name}"
        entry = _entry(field)
        if entry is not None:
            found = _in_map(entry, value, where)
        elif field.is_repeated:
            found = _in_items(field, value, where)
        else:
            found = _in_value(field, value, where)
        if found is not None:
            return found
    return None


def _in_value(field: FieldDescriptor, value: Any, where: str) -> str | None:
    if field.type == FieldDescriptor.TYPE_STRING:
        return where if _NUL in value else None
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return find_nul(value, f"{where}.")
    return None


def _in_items(field: FieldDescriptor, values: Any, where: str) -> str | None:
    for index, item in enumerate(values):
        found = _in_value(field, item, f"{where}[{index}]")
        if found is not None:
            return found
    return None


def _in_map(entry: Descriptor, entries: Any, where: str) -> str | None:
    key_field = entry.fields_by_name["key"]
    value_field = entry.fields_by_name["value"]
    for key, item in entries.items():
        if key_field.type == FieldDescriptor.TYPE_STRING and _NUL in key:
            return f"{where}[key]"
        # Keys are caller data (maybe personal): the path never quotes them.
        found = _in_value(value_field, item, f"{where}[value]")
        if found is not None:
            return found
    return None


def reject_nul(message: Message) -> None:
    where = find_nul(message)
    if where is not None:
        raise InvalidArgument.field(where, "must not contain NUL (U+0000) characters")


@cache
def _may_hold_floats(desc: Descriptor) -> bool:
    """Whether a message of this type can hold a double or float anywhere."""
    pending, seen = [desc], {desc.full_name}
    while pending:
        current = pending.pop()
        for field in current.fields:
            if field.type in _FLOATING:
                return True
            nested = field.message_type
            if nested is not None and nested.full_name not in seen:
                seen.add(nested.full_name)
                pending.append(nested)
    return False


def _key(key: str) -> str:
    # Struct keys are caller data: named only when they look like a field name.
    return f".{key}" if _PLAIN_KEY.fullmatch(key) else "[?]"


def find_non_finite(message: Message, prefix: str = "") -> str | None:
    """The path of the first NaN or infinite double/float, or None."""
    name = message.DESCRIPTOR.full_name
    if name in _JSON_TYPES:
        return _in_json(message, prefix.removesuffix("."))
    for field, value in message.ListFields():
        where = f"{prefix}{field.name}"
        entry = _entry(field)
        if entry is not None:
            value_field = entry.fields_by_name["value"]
            items: Iterable[tuple[str, Any]] = ((f"{where}[value]", v) for v in value.values())
        elif field.is_repeated:
            value_field = field
            items = ((f"{where}[{i}]", v) for i, v in enumerate(value))
        else:
            value_field, items = field, ((where, value),)
        for at, item in items:
            if value_field.type in _FLOATING:
                if not math.isfinite(item):
                    return at
            elif value_field.type == FieldDescriptor.TYPE_MESSAGE:
                found = find_non_finite(item, f"{at}.")
                if found is not None:
                    return found
    return None


def _in_json(message: Any, where: str) -> str | None:
    """Struct / Value / ListValue, named by JSON path (config.records[0].n)."""
    name = message.DESCRIPTOR.full_name
    if name == "google.protobuf.Struct":
        for key, value in message.fields.items():
            found = _in_json(value, where + _key(key))
            if found is not None:
                return found
    elif name == "google.protobuf.ListValue":
        for index, value in enumerate(message.values):
            found = _in_json(value, f"{where}[{index}]")
            if found is not None:
                return found
    else:
        kind = message.WhichOneof("kind")
        if kind == "number_value":
            return None if math.isfinite(message.number_value) else where
        if kind in ("struct_value", "list_value"):
            return _in_json(getattr(message, kind), where)
    return None


def reject_non_finite(message: Message, wire: bytes) -> None:
    if not _may_hold_floats(message.DESCRIPTOR) or not _NON_FINITE_BYTES.search(wire):
        return
    where = find_non_finite(message)
    if where is not None:
        raise InvalidArgument.field(
            where or message.DESCRIPTOR.name,
            "must be a finite number (NaN and Infinity have no JSON form)",
            reason="NON_FINITE_NUMBER",
        )


class _Undecodable:
    """Stands for a request whose bytes are not a valid message (see lenient)."""


_UNDECODABLE = _Undecodable()


def lenient(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """A request deserializer that never raises; check_request reports the failure."""
    if deserializer is None:
        return None

    def parse(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception:  # DecodeError, RecursionError, ...
            return _UNDECODABLE

    return parse


def check_request(request: Any) -> None:
    """Raises InvalidArgument for an undecodable request, a NUL in any string or
    a non-finite number."""
    if request is _UNDECODABLE:
        raise InvalidArgument(
            "the request is not a valid protobuf message of this method's type",
            reason="MALFORMED_REQUEST",
        )
    # A NUL character is a zero byte on the wire: the (C) serializer is a cheap
    # filter, the field walk runs only when some zero byte (a 0, an empty string) is there.
    if isinstance(request, Message):
        wire = request.SerializeToString()
        if b"\x00" in wire:
            reject_nul(request)
        reject_non_finite(request, wire)
