"""A protobuf request as the HTTP request its google.api.http rule describes.

Used to send the same table of requests through the REST adapter as over gRPC:
path variables from the fields they name, `body: "*"` as the message's JSON,
the other fields of a GET as query parameters.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from google.api import annotations_pb2
from google.protobuf import json_format
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message

# `{name}` (one segment) or `{name=**}` (any number of segments, slashes kept).
_VARIABLE = re.compile(r"\{([a-z_][a-z0-9_]*)(=\*\*)?\}")


@dataclass(frozen=True)
class HttpRequest:
    method: str
    path: str
    query: list[tuple[str, str]]
    body: bytes | None


def http_rule(method: MethodDescriptor) -> tuple[str, str, str]:
    """(HTTP method, path template, body) of the method's main binding."""
    rule = method.GetOptions().Extensions[annotations_pb2.http]
    verb = rule.WhichOneof("pattern")
    assert verb is not None and verb != "custom", f"{method.full_name}: no plain HTTP binding"
    return verb.upper(), getattr(rule, verb), rule.body


def _query_items(name: str, value: Any) -> list[tuple[str, str]]:
    if isinstance(value, list):
        return [item for v in value for item in _query_items(name, v)]
    if isinstance(value, bool):
        return [(name, "true" if value else "false")]
    if isinstance(value, dict):
        raise ValueError(f"{name}: a message cannot go into the query")
    return [(name, str(value))]


def to_http(method: MethodDescriptor, message: Message) -> HttpRequest:
    verb, template, body = http_rule(method)
    doc = json_format.MessageToDict(message, preserving_proto_field_name=True)
    bound = [name for name, _ in _VARIABLE.findall(template)]
    assert _VARIABLE.sub("", template).count("{") == 0, f"unsupported template {template}"

    def fill(match: re.Match[str]) -> str:
        value = doc.pop(match.group(1), "")
        return quote(str(value), safe="/" if match.group(2) else "")

    path = _VARIABLE.sub(fill, template)
    assert len(bound) <= 1 or all(b not in doc for b in bound)
    if body == "*":
        return HttpRequest(verb, path, [], json.dumps(doc).encode())
    assert not body, f"{method.full_name}: body field bindings are not used by Kaireon"
    query = [item for name, value in doc.items() for item in _query_items(name, value)]
    return HttpRequest(verb, path, query, None)
