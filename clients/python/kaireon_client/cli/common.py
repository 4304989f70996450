"""Helpers shared by the CLI subcommands: output and error reporting.

`--json` output is stable for scripts: keys sorted at every depth, and
numbers that are integers printed as integers — proto3 JSON writes int64
fields as strings ("5") and google.protobuf.Struct holds every number as a
double (5.0); both come out as 5.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

# Exit codes: 0 ok, 1 the server refused or failed, 2 usage, 3 verification failed.
EXIT_RPC_ERROR = 1
EXIT_USAGE = 2
EXIT_VERIFY_FAILED = 3

_INT64_TYPES = frozenset(
    {
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_FIXED64,
        FieldDescriptor.TYPE_SFIXED64,
    }
)
# Well-known types whose JSON form is a string or free-form JSON, not an object of fields.
_OPAQUE_TYPES = frozenset(
    {
        "google.protobuf.Timestamp",
        "google.protobuf.Duration",
        "google.protobuf.FieldMask",
        "google.protobuf.Struct",
        "google.protobuf.Value",
        "google.protobuf.ListValue",
        "google.protobuf.Any",
    }
)


def message_to_dict(message: Message) -> dict[str, Any]:
    """proto3 JSON of `message` with int64 fields as integers."""
    value = json_format.MessageToDict(message, always_print_fields_with_no_presence=True)
    return _int64_as_int(message.DESCRIPTOR, value)  # type: ignore[arg-type]


def _int64_as_int(descriptor: Descriptor, value: dict[str, Any]) -> dict[str, Any]:
    for field in descriptor.fields:
        key = field.json_name
        if key not in value:
            continue
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            entry = field.message_type.fields_by_name["value"]
            value[key] = {k: _field_value(entry, v) for k, v in value[key].items()}
        elif field.is_repeated:
            value[key] = [_field_value(field, v) for v in value[key]]
        else:
            value[key] = _field_value(field, value[key])
    return value


def _field_value(field: FieldDescriptor, value: Any) -> Any:
    if field.type in _INT64_TYPES and isinstance(value, str):
        return int(value)
    message_type = field.message_type
    opaque = message_type is None or message_type.full_name in _OPAQUE_TYPES
    if not opaque and isinstance(value, dict):
        assert message_type is not None
        return _int64_as_int(message_type, value)
    return value


def normalize_numbers(value: Any) -> Any:
    """Floats with an integral value (Struct numbers, 1.0) as ints, at any depth."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: normalize_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [normalize_numbers(v) for v in value]
    return value


def dumps_json(value: Any, *, indent: int | None = 2) -> str:
    """The one JSON writer of `--json`: sorted keys, integral numbers as integers."""
    if isinstance(value, Message):
        value = message_to_dict(value)
    return json.dumps(normalize_numbers(value), indent=indent, sort_keys=True)


def print_json(value: Any, *, file: Any = None) -> None:
    print(dumps_json(value), file=file or sys.stdout)


def fail(message: str, code: int = EXIT_USAGE) -> int:
    """Print a one-line error for the user and return the exit status."""
    print(f"kaireon: {message}", file=sys.stderr)
    return code


def _hint(code: grpc.StatusCode | None, target: str) -> str:
    """What a newcomer usually has to change, for the refusals that need it."""
    if code == grpc.StatusCode.UNAVAILABLE:
        return f"is a server listening on {target}? (--target or KAIREON_TARGET)"
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return "give an identity: --token (JWT), or --tenant and --role where headers are trusted"
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return "the call took longer than --timeout seconds"
    return ""


def report_rpc_error(exc: grpc.RpcError, target: str = "") -> int:
    code = exc.code() if hasattr(exc, "code") else None
    details = exc.details() if hasattr(exc, "details") else str(exc)
    name = code.name if code is not None else "UNKNOWN"
    print(f"kaireon: {name}: {details}", file=sys.stderr)
    hint = _hint(code, target or "the target")
    if hint:
        print(f"kaireon: hint: {hint}", file=sys.stderr)
    return EXIT_RPC_ERROR
