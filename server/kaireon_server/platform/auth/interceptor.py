"""The one server interceptor: authenticate and authorise by min_role.

Handlers stay thin: they read `current_identity()` and raise domain errors; a
failed call is reported through platform/rpc/status.py, the one mapping of
errors to gRPC statuses.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import grpc

from kaireon_server.platform.auth.authenticator import Authenticator
from kaireon_server.platform.auth.identity import Identity, Role, reset_identity, set_identity
from kaireon_server.platform.errors import PermissionDenied
from kaireon_server.platform.input_checks import check_request, lenient
from kaireon_server.platform.rpc.status import abort_with, log_failure, status_for

UnaryBehavior = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]
StreamBehavior = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], AsyncIterator[Any]]


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
        log_failure(method, exc, status)
        await abort_with(context, status)

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
