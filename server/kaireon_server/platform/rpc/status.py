"""Errors -> gRPC statuses: the one mapping of the server.

Domain code raises `platform.errors` types and never imports grpc; this module
turns those (and asyncpg's SQLSTATE classes) into a google.rpc.Status with
ErrorInfo / BadRequest / RetryInfo details. Unexpected errors become INTERNAL
with a generic message: their text may hold personal data, so it is never sent
or logged, only the exception type and the code location. The interceptors
(platform/auth/interceptor.py, platform/admission.py) report through it.
"""

from __future__ import annotations

import logging
import math
import traceback
from typing import Any

import asyncpg
import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from kaireon_server.platform.errors import KaireonError, ResourceExhausted

log = logging.getLogger(__name__)

DOMAIN = "kaireon.dev"

_UNAVAILABLE_DB_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
)

# Text PostgreSQL cannot store (a NUL, an unconvertible character): the value
# came from the caller, so it is bad input, not a server fault.
_UNSTORABLE_TEXT_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.CharacterNotInRepertoireError,
    asyncpg.exceptions.UntranslatableCharacterError,
)


def _pack(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


# The status message and details travel as response headers, and gRPC clients
# refuse headers beyond 16 KiB (8 KiB soft): an error quoting a megabyte of
# caller input would reach the client as RESOURCE_EXHAUSTED instead of itself.
MAX_MESSAGE_CHARS = 300
MAX_TEXT_CHARS = 300
MAX_DETAILS_BYTES = 3500


def _cut(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _violations(exc: KaireonError, budget: int) -> error_details_pb2.BadRequest:
    """As many field violations as fit in `budget` bytes, then a count of the rest."""
    request = error_details_pb2.BadRequest()
    for index, v in enumerate(exc.violations):
        request.field_violations.add(field=_cut(v.field), description=_cut(v.description))
        if request.ByteSize() > budget:
            del request.field_violations[-1]
            rest = len(exc.violations) - index
            request.field_violations.add(field="", description=f"and {rest} more problem(s)")
            break
    return request


def status_for(exc: BaseException) -> status_pb2.Status:
    """The google.rpc.Status a raised exception is reported as."""
    if isinstance(exc, KaireonError):
        code = code_pb2.Code.Value(exc.code.value)
        metadata = {_cut(k): _cut(v) for k, v in exc.metadata.items()}
        info = error_details_pb2.ErrorInfo(reason=exc.reason, domain=DOMAIN, metadata=metadata)
        details = [_pack(info)]
        if isinstance(exc, ResourceExhausted) and exc.retry_after is not None:
            details.append(_pack(retry_info(exc.retry_after)))
        if exc.violations:
            details.append(_pack(_violations(exc, MAX_DETAILS_BYTES - info.ByteSize())))
        return status_pb2.Status(
            code=code, message=_cut(exc.message, MAX_MESSAGE_CHARS), details=details
        )
    if isinstance(exc, asyncpg.UniqueViolationError):
        return _simple(code_pb2.ALREADY_EXISTS, "the resource already exists", "ALREADY_EXISTS")
    if isinstance(exc, asyncpg.SerializationError | asyncpg.DeadlockDetectedError):
        return _simple(code_pb2.ABORTED, "concurrent update; retry", "CONCURRENT_UPDATE")
    if isinstance(exc, _UNSTORABLE_TEXT_ERRORS):
        return _simple(
            code_pb2.INVALID_ARGUMENT,
            "the request holds text the database cannot store",
            "UNSTORABLE_TEXT",
        )
    if isinstance(exc, asyncpg.TooManyConnectionsError):
        # PostgreSQL's max_connections is reached (SQLSTATE 53300): a limit, not a bug.
        status = _simple(
            code_pb2.RESOURCE_EXHAUSTED,
            "database connections exhausted; retry later",
            "DB_CONNECTIONS_EXHAUSTED",
        )
        status.details.append(_pack(retry_info(1.0)))
        return status
    if isinstance(exc, asyncpg.QueryCanceledError):
        return _simple(code_pb2.DEADLINE_EXCEEDED, "database statement timed out", "DB_TIMEOUT")
    # Before the connection errors: TimeoutError is an OSError.
    if isinstance(exc, TimeoutError):
        return _simple(code_pb2.UNAVAILABLE, "dependency timed out; retry", "TIMEOUT")
    if isinstance(exc, _UNAVAILABLE_DB_ERRORS):
        return _simple(code_pb2.UNAVAILABLE, "database unavailable; retry", "DB_UNAVAILABLE")
    return _simple(code_pb2.INTERNAL, "internal error", "INTERNAL")


def _simple(code: int, message: str, reason: str) -> status_pb2.Status:
    info = error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN)
    return status_pb2.Status(code=code, message=message, details=[_pack(info)])


def log_failure(method: str, exc: BaseException, status: status_pb2.Status) -> None:
    if status.code in (code_pb2.INTERNAL, code_pb2.UNAVAILABLE):
        frames = traceback.extract_tb(exc.__traceback__)
        where = [f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno}:{f.name}" for f in frames[-6:]]
        log.error(
            "rpc failed",
            extra={
                "method": method,
                "code": code_pb2.Code.Name(status.code),
                "error_type": type(exc).__name__,
                "sqlstate": getattr(exc, "sqlstate", None),
                "where": where,
            },
        )
    else:
        log.info(
            "rpc rejected",
            extra={
                "method": method,
                "code": code_pb2.Code.Name(status.code),
                "reason": _reason(status),
            },
        )


def _reason(status: status_pb2.Status) -> str:
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return str(info.reason)
    return ""


def retry_info(seconds: float) -> error_details_pb2.RetryInfo:
    whole = math.floor(seconds)
    delay = duration_pb2.Duration(seconds=whole, nanos=round((seconds - whole) * 1e9))
    return error_details_pb2.RetryInfo(retry_delay=delay)


async def abort_with(
    context: grpc.aio.ServicerContext[Any, Any], status: status_pb2.Status
) -> None:
    """Ends the call with `status`, its details in the grpc-status-details-bin trailer."""
    converted = rpc_status.to_status(status)
    await context.abort(converted.code, converted.details, converted.trailing_metadata)
