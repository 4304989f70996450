"""Helpers shared by the CLI subcommands: output and error reporting."""

from __future__ import annotations

import json
import sys
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message

# Exit codes: 0 ok, 1 the server refused or failed, 2 usage, 3 verification failed.
EXIT_RPC_ERROR = 1
EXIT_VERIFY_FAILED = 3


def message_to_dict(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(message, always_print_fields_with_no_presence=True)


def print_json(value: Any) -> None:
    if isinstance(value, Message):
        value = message_to_dict(value)
    print(json.dumps(value, indent=2, sort_keys=False))


def report_rpc_error(exc: grpc.RpcError) -> int:
    code = exc.code() if hasattr(exc, "code") else None
    details = exc.details() if hasattr(exc, "details") else str(exc)
    name = code.name if code is not None else "UNKNOWN"
    print(f"kaireon: {name}: {details}", file=sys.stderr)
    return EXIT_RPC_ERROR
