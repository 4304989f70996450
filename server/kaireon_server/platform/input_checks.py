"""Input rules that hold for every RPC, checked once by the interceptor.

- A request whose bytes do not decode (corrupt wire format, bad UTF-8,
  nesting beyond the parser's depth limit) is INVALID_ARGUMENT. grpc itself
  would answer UNKNOWN with the parser's text, before any error mapping.
- PostgreSQL text and jsonb cannot hold U+0000, so a NUL in any string of a
  request could only ever fail deep inside a query (as an INTERNAL error); it
  is refused up front instead, naming the field.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from kaireon_server.platform.errors import InvalidArgument

_NUL = "\x00"


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
    """Raises InvalidArgument for an undecodable request or a NUL in any string."""
    if request is _UNDECODABLE:
        raise InvalidArgument(
            "the request is not a valid protobuf message of this method's type",
            reason="MALFORMED_REQUEST",
        )
    # A NUL character is a zero byte on the wire: the (C) serializer is a cheap
    # filter, the field walk runs only when some zero byte (a 0, an empty string) is there.
    if isinstance(request, Message) and b"\x00" in request.SerializeToString():
        reject_nul(request)
