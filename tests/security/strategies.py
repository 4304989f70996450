"""Hypothesis strategies for any protobuf message, built from its descriptor.

Strings mix arbitrary unicode with hostile shapes (SQL injection, NUL bytes,
format and path tricks, megabyte strings), real identifiers of the fuzzed
tenant and the service's vocabulary (node types, statuses, page tokens), so
generated requests reach past the first validation. Structs get JSON of any
shape, sometimes deeply nested; enums get unknown numbers too; repeated and
map fields get several entries; oneofs get a random member.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Sequence
from typing import Any

from google.protobuf import struct_pb2, timestamp_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import strategies as st

INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)

SQL_INJECTION = [
    "x'; DROP TABLE audit_log; --",
    "' OR '1'='1",
    "1; DELETE FROM legal_hold; --",
    '"; SELECT pg_sleep(30); --',
    "cust_00001' UNION SELECT integrity_hash FROM audit_log --",
    "$1",
    "%",
    "_",
    "%_%",
    "\\",
    "';COMMIT;TRUNCATE audit_log;--",
]
ODD = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "cust_00001\x00",
    "\n",
    "\r\n\t",
    "\u202e\u200b\ufeff",
    "\U0001f600",
    "é" * 3,
    "NaN",
    "-1",
    "9223372036854775808",
    "00000000-0000-0000-0000-000000000000",
    "../../../etc/passwd",
    "${jndi:ldap://x/a}",
    "{{7*7}}",
    "<script>alert(1)</script>",
    "ds_x; DROP",
    "audit_log",
]
VOCABULARY = [
    "export",
    "pending",
    "processing",
    "completed",
    "failed",
    "source.inline",
    "source.sql",
    "transform.filter",
    "transform.rename",
    "transform.cast",
    "transform.derive",
    "transform.dedupe",
    "transform.join",
    "transform.mask",
    "sink.table",
    "sink.dsar_export",
    "sink.erasure",
    "records",
    "query",
    "where",
    "fields",
    "customer_id",
    "SELECT customer_id FROM interaction_history",
    "SELECT * FROM audit_log",
    "n >= 1",
    "dsar_request_created",
    "gdpr_erasure",
    "dsar_request",
    "flow_run",
    "legal_hold",
]
TOKEN_KEYS = ["seq", "after", "c", "i", "r"]


def _token(position: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(position).encode()).decode()


def page_tokens() -> st.SearchStrategy[str]:
    """Well-formed base64 JSON holding what a page position should not."""
    values = st.one_of(
        st.integers(min_value=-(2**70), max_value=2**70),
        st.booleans(),
        st.none(),
        st.sampled_from([*SQL_INJECTION, *ODD]),
        st.text(max_size=8),
        st.lists(st.integers(), max_size=2),
        st.just("2026-01-01T00:00:00+00:00"),
    )
    return st.dictionaries(st.sampled_from(TOKEN_KEYS), values, max_size=3).map(_token)


def huge_strings() -> st.SearchStrategy[str]:
    return st.sampled_from([300, 5_000, 70_000, 1_100_000]).flatmap(
        lambda n: st.sampled_from(["x" * n, "é" * (n // 2), "'" * n])
    )


def strings(known: Sequence[str]) -> st.SearchStrategy[str]:
    """Branches are drawn evenly: most strings are hostile, a real identifier
    often carries the hostile part so it gets past syntax checks."""
    pool = st.sampled_from(list(known) + VOCABULARY)
    hostile = st.sampled_from(SQL_INJECTION + ODD)
    return st.one_of(
        hostile,
        st.tuples(pool, hostile).map("".join),
        st.tuples(pool, st.sampled_from(["\x00", "\x00'--", "\u202e", "'"])).map("".join),
        pool,
        st.text(st.characters(codec="utf-8"), max_size=24),
        page_tokens(),
        huge_strings(),
    )


def json_values(text: st.SearchStrategy[str]) -> st.SearchStrategy[Any]:
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.floats(),  # NaN and infinities included: a Struct carries doubles
        st.sampled_from([math.nan, math.inf, -math.inf, 1.7976931348623157e308, -5e-324]),
        st.integers(-(2**60), 2**60),
        text,
    )
    shallow = st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
        max_leaves=12,
    )
    return st.one_of(shallow, deep_json())


def deep_json() -> st.SearchStrategy[Any]:
    """Nesting the Python protobuf runtime still builds (it stops between 30 and 60 levels)."""

    def nest(depth: int) -> Any:
        value: Any = "leaf"
        for level in range(depth):
            value = {"k": value} if level % 2 else [value]
        return value

    return st.integers(min_value=5, max_value=30).map(nest)


class MessageStrategies:
    """Strategies for the messages of one descriptor tree, with cycles cut at `max_depth`."""

    def __init__(self, known: Sequence[str], *, max_depth: int = 4) -> None:
        self.text = strings(known)
        self.json = json_values(self.text)
        self.max_depth = max_depth

    def message(self, desc: Descriptor, depth: int = 0) -> st.SearchStrategy[Message]:
        cls = GetMessageClass(desc)
        if desc.full_name == "google.protobuf.Struct":
            return st.dictionaries(self.text, self.json, max_size=4).map(_struct)
        if desc.full_name == "google.protobuf.Timestamp":
            return st.builds(
                timestamp_pb2.Timestamp,
                seconds=st.integers(*INT64),
                nanos=st.integers(*INT32),
            )
        if depth >= self.max_depth:
            return st.just(cls())
        optional = {f.name: self.field(f, depth) for f in desc.fields}
        return st.fixed_dictionaries({}, optional=optional).map(lambda values: _build(cls, values))

    def field(self, field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
        if field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type.GetOptions().map_entry:
            key = self.scalar(field.message_type.fields_by_name["key"], depth)
            value = self.single(field.message_type.fields_by_name["value"], depth)
            return st.dictionaries(key, value, max_size=4)
        if field.is_repeated:
            return st.lists(self.single(field, depth), max_size=5)
        return self.single(field, depth)

    def single(self, field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            return self.message(field.message_type, depth + 1)
        return self.scalar(field, depth)

    def scalar(self, field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
        t = field.type
        if t == FieldDescriptor.TYPE_STRING:
            return self.text
        if t == FieldDescriptor.TYPE_BYTES:
            return st.binary(max_size=64)
        if t == FieldDescriptor.TYPE_BOOL:
            return st.booleans()
        if t == FieldDescriptor.TYPE_ENUM:
            known = [v.number for v in field.enum_type.values]
            return st.one_of(st.sampled_from(known), st.integers(-3, 1000), st.integers(*INT32))
        if t in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
            width = 64 if t == FieldDescriptor.TYPE_DOUBLE else 32
            return st.one_of(st.floats(width=width), st.sampled_from([math.nan, math.inf]))
        if t in (
            FieldDescriptor.TYPE_INT64,
            FieldDescriptor.TYPE_SINT64,
            FieldDescriptor.TYPE_SFIXED64,
        ):
            return st.one_of(st.integers(-3, 1100), st.sampled_from(INT64), st.integers(*INT64))
        if t in (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64):
            return st.integers(0, 2**64 - 1)
        if t in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32):
            return st.integers(0, 2**32 - 1)
        return st.one_of(st.integers(-3, 1100), st.sampled_from(INT32), st.integers(*INT32))


def _struct(values: dict[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(values)
    return struct


def _build(cls: type[Message], values: dict[str, Any]) -> Message:
    message = cls()
    for name, value in values.items():
        field = cls.DESCRIPTOR.fields_by_name[name]
        target = (
            getattr(message, name)
            if field.is_repeated or field.type == FieldDescriptor.TYPE_MESSAGE
            else None
        )
        if field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            for key, item in value.items():
                if value_field.type == FieldDescriptor.TYPE_MESSAGE:
                    target[key].CopyFrom(item)
                else:
                    target[key] = item
        elif field.is_repeated:
            if field.type == FieldDescriptor.TYPE_MESSAGE:
                for item in value:
                    target.add().CopyFrom(item)
            else:
                target.extend(value)
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            target.CopyFrom(value)
        else:
            setattr(message, name, value)  # a later oneof member replaces an earlier one
    return message
