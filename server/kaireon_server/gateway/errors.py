"""gRPC status -> HTTP status and the google.rpc.Status JSON error body."""

from __future__ import annotations

import base64
import json
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import grpc
from aiohttp import web
from google.protobuf import any_pb2, json_format
from google.protobuf.message import DecodeError
from google.rpc import (
    error_details_pb2,
    status_pb2,
)

_log = logging.getLogger(__name__)

# Imported so ErrorInfo, BadRequest, ... resolve when details are rendered.
_DETAIL_TYPES = error_details_pb2

DETAILS_KEY = "grpc-status-details-bin"

# grpc-gateway runtime/errors.go HTTPStatusFromCode (Envoy's table agrees).
HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
}


class RequestError(ValueError):
    """The HTTP request cannot become a gRPC call (answered with 400)."""


def http_status(code: grpc.StatusCode) -> int:
    return HTTP_STATUS.get(code, 500)


def code_number(code: grpc.StatusCode) -> int:
    number = code.value[0]
    assert isinstance(number, int)
    return number


@dataclass
class ErrorReply:
    """An error answer: HTTP status, google.rpc.Status JSON and extra headers."""

    status: int
    code: int
    message: str
    details: list[Any] = field(default_factory=list)
    headers: list[tuple[str, str]] = field(default_factory=list)

    def body(self) -> dict[str, Any]:
        """The google.rpc.Status JSON; details is always present."""
        return {"code": self.code, "message": self.message, "details": self.details}


def gateway_error(
    status: int, code: grpc.StatusCode, message: str, headers: Sequence[tuple[str, str]] = ()
) -> ErrorReply:
    """An error the gateway itself raises (no route, bad JSON, body too large)."""
    return ErrorReply(status, code_number(code), message, [], list(headers))


def from_rpc_error(error: grpc.aio.AioRpcError) -> ErrorReply:
    """The reply for a failed call, with details from grpc-status-details-bin."""
    code = error.code()
    message = error.details() or ""
    reply = ErrorReply(
        http_status(code),
        code_number(code),
        message,
        decode_details(code, error.trailing_metadata()),
    )
    delay = retry_delay(code, error.trailing_metadata())
    if delay is not None:
        # RFC 9110 Retry-After: whole seconds, rounded up so a client never retries early.
        reply.headers.append(("Retry-After", str(max(1, math.ceil(delay)))))
    if code is grpc.StatusCode.UNAUTHENTICATED:
        # grpc-gateway sets it so HTTP clients see an authentication challenge.
        reply.headers.append(("WWW-Authenticate", message or "Bearer"))
    return reply


def retry_delay(code: grpc.StatusCode, trailing: object) -> float | None:
    """Seconds of the google.rpc.RetryInfo detail of a failed call, if it has one."""
    for key, value in cast("Iterable[tuple[object, object]]", trailing or ()):
        if key != DETAILS_KEY or not isinstance(value, bytes):
            continue
        try:
            status = status_pb2.Status.FromString(value)
        except DecodeError:
            return None
        if status.code != code_number(code):
            return None
        for detail in status.details:
            info = error_details_pb2.RetryInfo()
            if detail.Unpack(info):
                return float(info.retry_delay.ToTimedelta().total_seconds())
    return None


def decode_details(code: grpc.StatusCode, trailing: object) -> list[Any]:
    """What grpc_status.rpc_status.from_call reads, as Any JSON objects."""
    # grpc hands metadata over as (key, value) pairs in various containers.
    for key, value in cast("Iterable[tuple[object, object]]", trailing or ()):
        if key != DETAILS_KEY or not isinstance(value, bytes):
            continue
        try:
            status = status_pb2.Status.FromString(value)
        except DecodeError:
            _log.warning("undecodable %s trailer ignored", DETAILS_KEY)
            return []
        if status.code != code_number(code):
            # rpc_status.from_call rejects such a status; keep the call's code.
            _log.warning("%s code %d differs from the call's %s", DETAILS_KEY, status.code, code)
            return []
        return [any_to_json(detail) for detail in status.details]
    return []


def any_to_json(detail: any_pb2.Any) -> Any:
    """An Any as {"@type": ..., fields}; raw base64 when the type is unknown here."""
    try:
        return json_format.MessageToDict(detail, always_print_fields_with_no_presence=True)
    except (TypeError, KeyError, json_format.Error):
        return {
            "@type": detail.type_url,
            "value": base64.b64encode(detail.value).decode("ascii"),
        }


def error_response(reply: ErrorReply) -> web.Response:
    """The JSON error answer; if even that fails, grpc-gateway's fixed fallback."""
    try:
        body = json.dumps(reply.body(), separators=(",", ":"), ensure_ascii=False).encode()
    except (TypeError, ValueError):
        _log.exception("error body not serialisable")
        return web.Response(
            status=500,
            body=b'{"code":13,"message":"failed to marshal error message","details":[]}',
            content_type="application/json",
        )
    return web.Response(
        status=reply.status,
        body=body,
        headers=[*reply.headers, ("Content-Type", "application/json")],
    )
