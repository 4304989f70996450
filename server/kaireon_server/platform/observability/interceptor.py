"""RPC metrics and server spans for every gRPC call; the outermost interceptor,
so it sees authentication and admission refusals with their final status code."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from opentelemetry.trace import SpanKind, StatusCode

from kaireon_server.platform.observability import metrics, tracing

Behavior = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Any]

_KINDS = (
    ("unary_unary", grpc.unary_unary_rpc_method_handler, "unary"),
    ("unary_stream", grpc.unary_stream_rpc_method_handler, "server_stream"),
    ("stream_unary", grpc.stream_unary_rpc_method_handler, "client_stream"),
    ("stream_stream", grpc.stream_stream_rpc_method_handler, "bidi_stream"),
)


def _go_name(code: grpc.StatusCode) -> str:
    """go-grpc-prometheus spells codes as Go does: OK, Canceled, InvalidArgument, ..."""
    if code is grpc.StatusCode.OK:
        return "OK"
    if code is grpc.StatusCode.CANCELLED:
        return "Canceled"
    return "".join(part.capitalize() for part in code.name.split("_"))


CODES = {code: _go_name(code) for code in grpc.StatusCode}
_BY_NUMBER = {code.value[0]: name for code, name in CODES.items()}
_NUMBER = {name: code.value[0] for code, name in CODES.items()}


def _code_name(context: grpc.aio.ServicerContext[Any, Any], default: str) -> str:
    code: Any = context.code()
    if code is None:
        return default
    if isinstance(code, grpc.StatusCode):
        return CODES[code]
    return _BY_NUMBER.get(code, default)


class _Method:
    """The pre-resolved metric children of one method and type."""

    def __init__(self, full: str, grpc_type: str) -> None:
        service, _, method = full.lstrip("/").partition("/")
        self.span_name = f"{service}/{method}"
        self.attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": method}
        self.labels = (grpc_type, service, method)
        self.started = metrics.RPC_STARTED.labels(*self.labels)
        self.handling = metrics.RPC_HANDLING.labels(*self.labels)
        self.in_flight = metrics.RPC_IN_FLIGHT.labels(*self.labels)
        self._handled: dict[str, Any] = {}

    def handled(self, code: str) -> Any:
        child = self._handled.get(code)
        if child is None:
            child = self._handled[code] = metrics.RPC_HANDLED.labels(*self.labels, code)
        return child


class _Call:
    def __init__(self, method: _Method, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        self.method = method
        self.context = context
        self.began = time.perf_counter()
        self.span_cm: Any = None
        self.span: Any = None
        method.started.inc()
        method.in_flight.inc()
        if tracing.enabled():
            parent = tracing.extract(context.invocation_metadata())
            self.span_cm = tracing.span(
                method.span_name, kind=SpanKind.SERVER, attributes=method.attributes, parent=parent
            )
            self.span = self.span_cm.__enter__()

    def finish(self, code: str, exc: BaseException | None) -> None:
        method = self.method
        method.in_flight.dec()
        method.handling.observe(time.perf_counter() - self.began)
        method.handled(code).inc()
        if self.span_cm is not None:
            self.span.set_attribute("rpc.grpc.status_code", _NUMBER.get(code, 2))
            if code != "OK":
                self.span.set_status(StatusCode.ERROR, code)
            # Exceptions are recorded by type via the status; no message (it may
            # quote input).
            self.span_cm.__exit__(None, None, None)

    def outcome(self, exc: BaseException | None) -> str:
        if exc is None:
            return _code_name(self.context, "OK")
        if isinstance(exc, asyncio.CancelledError):
            return "Canceled"
        return _code_name(self.context, "Unknown")


class ObservabilityInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    def __init__(self) -> None:
        self._methods: dict[tuple[str, str], _Method] = {}

    def _method(self, full: str, grpc_type: str) -> _Method:
        key = (full, grpc_type)
        method = self._methods.get(key)
        if method is None:
            method = self._methods[key] = _Method(full, grpc_type)
        return method

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler: Any = await continuation(handler_call_details)
        if handler is None:
            return None
        for attribute, make, grpc_type in _KINDS:
            inner = getattr(handler, attribute)
            if inner is None:
                continue
            method = self._method(str(handler_call_details.method), grpc_type)
            streams = grpc_type.endswith("stream") and grpc_type != "client_stream"
            if streams and inspect.isasyncgenfunction(inner):
                wrapped = self._generator(method, inner)
            else:
                wrapped = self._coroutine(method, inner)
            return make(
                wrapped,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler

    @staticmethod
    def _coroutine(method: _Method, inner: Behavior) -> Behavior:
        async def behavior(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            call = _Call(method, context)
            try:
                result = await inner(request, context)
            except BaseException as exc:
                call.finish(call.outcome(exc), exc)
                raise
            call.finish(call.outcome(None), None)
            return result

        return behavior

    @staticmethod
    def _generator(method: _Method, inner: Behavior) -> Behavior:
        async def behavior(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            call = _Call(method, context)
            try:
                async for item in inner(request, context):
                    yield item
            except BaseException as exc:
                call.finish(call.outcome(exc), exc)
                raise
            call.finish(call.outcome(None), None)

        return behavior
