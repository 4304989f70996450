"""The one server interceptor: authenticate, authorise by min_role, map errors to statuses.

Handlers stay thin: they read `current_identity()` and raise domain errors; this
module turns those (and asyncpg's SQLSTATE classes) into gRPC status codes with
google.rpc ErrorInfo / BadRequest details. Unexpected errors become INTERNAL with
a generic message: their text may hold personal data, so it is never sent or
logged, only the exception type and the code location.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import asyncpg
import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from kaireon_server.platform.admission import retry_info
from kaireon_server.platform.auth.authenticator import Authenticator
from kaireon_server.platform.auth.identity import Identity, Role, reset_identity, set_identity
from kaireon_server.platform.errors import KaireonError, PermissionDenied, ResourceExhausted
from kaireon_server.platform.input_checks import check_request, lenient

log = logging.getLogger(__name__)

DOMAIN = "kaireon.dev"

UnaryBehavior = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]
StreamBehavior = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], AsyncIterator[Any]]

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


def _log_failure(method: str, exc: BaseException, status: status_pb2.Status) -> None:
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


class KaireonInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    def __init__(self, authenticator: Authenticator, policy: Mapping[str, Role]) -> None:
        self._authenticator = authenticator
        self._policy = dict(policy)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler: Any = await continuation(handler_call_details)
        method = str(handler_call_details.method)
        min_role = self._policy.get(method)
        if handler is None or min_role is None:
            return handler  # health, reflection: public by design
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap_unary(handler.unary_unary, method, min_role),
                request_deserializer=lenient(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._wrap_stream(handler.unary_stream, method, min_role),
                request_deserializer=lenient(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        return handler

    def _authorise(self, context: grpc.aio.ServicerContext[Any, Any], min_role: Role) -> Identity:
        # All pairs, repeats included: a repeated identity key is refused, not resolved.
        metadata = [(str(k), v) for k, v in context.invocation_metadata() or ()]
        identity = self._authenticator.authenticate(metadata, context.peer())
        if identity.role < min_role:
            raise PermissionDenied(
                f"this method needs role {min_role.name.lower()}",
                reason="INSUFFICIENT_ROLE",
                metadata={"required_role": min_role.name.lower()},
            )
        return identity

    async def _abort(
        self, context: grpc.aio.ServicerContext[Any, Any], method: str, exc: BaseException
    ) -> None:
        status = status_for(exc)
        _log_failure(method, exc, status)
        grpc_status = rpc_status.to_status(status)
        await context.abort(grpc_status.code, grpc_status.details, grpc_status.trailing_metadata)

    def _wrap_unary(self, inner: UnaryBehavior, method: str, min_role: Role) -> UnaryBehavior:
        async def behavior(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            token = None
            try:
                token = set_identity(self._authorise(context, min_role))
                check_request(request)
                return await inner(request, context)
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                await self._abort(context, method, exc)
            finally:
                if token is not None:
                    reset_identity(token)

        return behavior

    def _wrap_stream(self, inner: StreamBehavior, method: str, min_role: Role) -> StreamBehavior:
        async def behavior(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            token = None
            try:
                token = set_identity(self._authorise(context, min_role))
                check_request(request)
                async for item in inner(request, context):
                    yield item
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                await self._abort(context, method, exc)
            finally:
                if token is not None:
                    reset_identity(token)

        return behavior
