"""google.protobuf.Timestamp fields of requests, read the one way: an unset
field is None; a value outside Timestamp's own range (years 1-9999, nanos
0-999,999,999), where ToDatetime would fail, is INVALID_ARGUMENT naming the
field, never an internal error."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from kaireon_server.platform.errors import InvalidArgument

MIN_SECONDS = -62135596800  # 0001-01-01T00:00:00Z
MAX_SECONDS = 253402300799  # 9999-12-31T23:59:59Z


def optional_time(request: Message, name: str) -> datetime | None:
    if not request.HasField(name):
        return None
    stamp: Timestamp = getattr(request, name)
    if not (MIN_SECONDS <= stamp.seconds <= MAX_SECONDS and 0 <= stamp.nanos < 10**9):
        raise InvalidArgument.field(name, "not a valid timestamp")
    return stamp.ToDatetime(tzinfo=UTC)
