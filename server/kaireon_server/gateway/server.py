"""The aiohttp application: routing, the gRPC calls, /healthz and /openapi.json."""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence

import grpc
from aiohttp import web
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2

from kaireon_server.gateway.errors import (
    RequestError,
    error_response,
    from_rpc_error,
    gateway_error,
)
from kaireon_server.gateway.headers import (
    IdentityHeaderError,
    deadline,
    request_metadata,
    response_headers,
)
from kaireon_server.gateway.openapi import build_openapi
from kaireon_server.gateway.render import dumps, render_message
from kaireon_server.gateway.routes import (
    DEFAULT_SERVICES,
    Route,
    RouteMatch,
    RouteTable,
    ServiceRef,
    build_routes,
)
from kaireon_server.gateway.settings import GatewaySettings
from kaireon_server.gateway.streaming import forward_stream
from kaireon_server.gateway.templates import PathDecodeError
from kaireon_server.gateway.transcode import build_request
from kaireon_server.platform.observability.http import observed_request
from kaireon_server.platform.observability.tracing import traceparent_metadata

_log = logging.getLogger(__name__)

HEALTH_PATH = "/healthz"
OPENAPI_PATH = "/openapi.json"
_HEALTH_CHECK = "/grpc.health.v1.Health/Check"

UnaryCallable = grpc.aio.UnaryUnaryMultiCallable[Message, Message]
StreamCallable = grpc.aio.UnaryStreamMultiCallable[Message, Message]


class GatewayServer:
    """The REST adapter in front of one gRPC target.

    Routes come from the google.api.http options of ``services`` (full service
    names, service descriptors or file descriptors); a rule that cannot be
    served fails construction, so a bad annotation stops start-up.
    """

    def __init__(
        self,
        grpc_target: str,
        services: Sequence[ServiceRef] = tuple(DEFAULT_SERVICES),
        settings: GatewaySettings | None = None,
        *,
        channel_credentials: grpc.ChannelCredentials | None = None,
        health_source: Callable[[], Awaitable[str]] | None = None,
    ) -> None:
        self.grpc_target = grpc_target
        self.settings = settings or GatewaySettings()
        self.routes = RouteTable(build_routes(services))
        self.openapi = build_openapi(self.routes.routes)
        self._openapi_body = dumps(self.openapi)
        self._credentials = channel_credentials
        self._forwarded = frozenset(h.lower() for h in self.settings.forwarded_headers)
        self._passthrough = frozenset(h.lower() for h in self.settings.passthrough_headers)
        self._channel: grpc.aio.Channel | None = None
        self._unary: dict[str, UnaryCallable] = {}
        self._stream: dict[str, StreamCallable] = {}
        self._health: (
            grpc.aio.UnaryUnaryMultiCallable[
                health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse
            ]
            | None
        ) = None
        self._runner: web.AppRunner | None = None
        self.port: int | None = None
        # In-process: the server's own health ("SERVING", ...) instead of a gRPC Check.
        self._health_source = health_source

    async def start(
        self,
        host: str | None = None,
        port: int | None = None,
        *,
        ssl_context: ssl.SSLContext | None = None,
        reuse_port: bool = False,
    ) -> int:
        """Opens the channel and listens (HTTPS with `ssl_context`); returns the bound
        port (port 0 = any free one)."""
        host = self.settings.http_host if host is None else host
        port = (self.settings.http_port or 0) if port is None else port
        self._open_channel()
        runner = web.AppRunner(
            self.make_app(),
            # A client that hangs up cancels its handler, and with it the gRPC call.
            handler_cancellation=True,
            # aiohttp's access log prints raw paths, which can hold customer ids.
            access_log=None,
            shutdown_timeout=5.0,
            # Slow and idle clients (GatewaySettings): in aiohttp the keep-alive
            # timer runs from the connection's start and from each response
            # until the next request's headers are complete, so it bounds idle
            # connections and header drip alike.
            keepalive_timeout=self.settings.header_timeout_seconds,
            max_line_size=self.settings.max_header_bytes,
            max_field_size=self.settings.max_header_bytes,
            max_headers=self.settings.max_headers,
            # A body the handler did not read is drained for at most this long
            # (aiohttp's default is 10 s).
            lingering_time=min(10.0, self.settings.body_timeout_seconds),
        )
        await runner.setup()
        site = web.TCPSite(runner, host, port, ssl_context=ssl_context, reuse_port=reuse_port)
        await site.start()
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        _log.info(
            "REST gateway on %s:%d -> %s (%d routes)",
            host,
            self.port,
            self.grpc_target,
            len(self.routes.routes),
        )
        return self.port

    async def stop(self) -> None:
        """Stops listening, lets running requests finish briefly, closes the channel."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._channel is not None:
            await self._channel.close(grace=None)
            self._channel = None

    def make_app(self) -> web.Application:
        """The aiohttp application (start() serves it; embedders may mount it)."""
        if self._channel is None:
            self._open_channel()
        app = web.Application(client_max_size=self.settings.max_body_bytes)
        # [\s\S]: an encoded newline in a path segment must still reach our
        # router (and its JSON 404), not aiohttp's plain-text one.
        app.router.add_route("*", r"/{tail:[\s\S]*}", self._handle)
        return app

    def _open_channel(self) -> None:
        if self._channel is not None:
            return
        size = self.settings.max_grpc_message_bytes
        options = [
            ("grpc.max_receive_message_length", size),
            ("grpc.max_send_message_length", size),
        ]
        if self._credentials is None:
            channel = grpc.aio.insecure_channel(self.grpc_target, options=options)
        else:
            channel = grpc.aio.secure_channel(self.grpc_target, self._credentials, options=options)
        for route in self.routes.routes:
            out = route.output_class
            if route.server_streaming:
                self._stream[route.grpc_path] = channel.unary_stream(
                    route.grpc_path,
                    request_serializer=_serialize,
                    response_deserializer=out.FromString,
                )
            else:
                self._unary[route.grpc_path] = channel.unary_unary(
                    route.grpc_path,
                    request_serializer=_serialize,
                    response_deserializer=out.FromString,
                )
        self._health = channel.unary_unary(
            _HEALTH_CHECK,
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )
        self._channel = channel

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        # A server span (W3C traceparent from the client when tracing is on),
        # renamed to the route template once it is known; never the raw path.
        with observed_request(request.method, request.headers) as observed:
            response, label = await self._route(request)
            observed.finish(label, response.status)
            return response

    async def _route(self, request: web.Request) -> tuple[web.StreamResponse, str]:
        started = time.monotonic()
        raw_path = request.rel_url.raw_path
        label = raw_path if raw_path in (HEALTH_PATH, OPENAPI_PATH) else "?"
        try:
            if raw_path in (HEALTH_PATH, OPENAPI_PATH):
                response = await self._fixed(request, raw_path)
            else:
                match = self.routes.lookup(request.method, raw_path)
                if match is None:
                    response = self._no_route(request.method, raw_path)
                else:
                    label = f"{match.route.http_method} {match.route.template.source}"
                    response = await self._call(request, match)
        except IdentityHeaderError as exc:
            response = error_response(
                gateway_error(
                    401, grpc.StatusCode.UNAUTHENTICATED, str(exc), [("WWW-Authenticate", "Bearer")]
                )
            )
        except (RequestError, PathDecodeError) as exc:
            response = error_response(
                gateway_error(400, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            )
        except web.HTTPRequestEntityTooLarge:
            response = self._too_large()
        except Exception:
            _log.exception("gateway failure on %s", label)
            response = error_response(
                gateway_error(500, grpc.StatusCode.INTERNAL, "internal gateway error")
            )
        # Log the route template, never the raw path (it may carry personal data).
        _log.debug(
            "%s %s -> %d in %.1f ms",
            request.method,
            label,
            response.status,
            (time.monotonic() - started) * 1000,
        )
        return response, label.partition(" ")[2] or label

    async def _call(self, request: web.Request, match: RouteMatch) -> web.StreamResponse:
        route = match.route
        length = request.content_length
        if length is not None and length > self.settings.max_body_bytes:
            return self._too_large()
        body = await self._read_body(request) if route.body else b""
        if body is None:
            return await self._body_timeout(request)
        message = build_request(
            route,
            match.path_values,
            request.rel_url.query.items(),
            body,
            request.headers.get("Content-Type", ""),
            strict=self.settings.strict_json,
        )
        metadata = request_metadata(
            request.headers.items(),
            self._forwarded,
            remote=request.remote,
            host=request.host,
            trusted_proxies=self.settings.trusted_proxies,
        )
        # The REST span's context into the internal call (nothing when tracing is off).
        metadata = [*metadata, *traceparent_metadata()]
        default = (
            self.settings.stream_timeout_seconds
            if route.server_streaming
            else self.settings.default_timeout_seconds
        )
        timeout = deadline(request.headers, default)
        if route.server_streaming:
            stream_call = self._stream[route.grpc_path](message, metadata=metadata, timeout=timeout)
            try:
                return await forward_stream(request, route, stream_call, self._passthrough)
            finally:
                stream_call.cancel()  # no-op when finished; frees the call on disconnect
        call = self._unary[route.grpc_path](message, metadata=metadata, timeout=timeout)
        try:
            reply = await call
            initial, trailing = await call.initial_metadata(), await call.trailing_metadata()
        except grpc.aio.AioRpcError as error:
            failure = from_rpc_error(error)
            failure.headers[:0] = response_headers(
                error.initial_metadata(), error.trailing_metadata(), self._passthrough
            )
            return error_response(failure)
        except asyncio.CancelledError:
            call.cancel()  # the client hung up: stop the server-side work too
            raise
        return self._unary_response(route, reply, initial, trailing)

    def _unary_response(
        self,
        route: Route,
        reply: Message,
        initial: grpc.aio.Metadata | None,
        trailing: grpc.aio.Metadata | None,
    ) -> web.Response:
        rendered = render_message(route, reply)
        headers = response_headers(initial, trailing, self._passthrough)
        headers.append(("Content-Type", rendered.content_type))
        return web.Response(status=200, body=rendered.body, headers=headers)

    def _no_route(self, method: str, raw_path: str) -> web.StreamResponse:
        allowed = self.routes.allowed_methods(raw_path)
        if not allowed:
            return error_response(gateway_error(404, grpc.StatusCode.NOT_FOUND, "Not Found"))
        allow = ", ".join([*allowed, "OPTIONS"])
        if method == "OPTIONS":
            # No CORS here; answer preflights politely instead of 405.
            return web.Response(status=204, headers={"Allow": allow})
        status = self.settings.method_not_allowed_status
        return error_response(
            gateway_error(
                status, grpc.StatusCode.UNIMPLEMENTED, "Method Not Allowed", [("Allow", allow)]
            )
        )

    async def _read_body(self, request: web.Request) -> bytes | None:
        """The body, or None when it did not arrive within the body timeout."""
        try:
            async with asyncio.timeout(self.settings.body_timeout_seconds):
                return await request.read()
        except TimeoutError:
            return None

    async def _body_timeout(self, request: web.Request) -> web.StreamResponse:
        """408, sent now; then the connection is cut rather than drained (aiohttp
        would otherwise linger reading the rest of a dripping body)."""
        response = error_response(
            gateway_error(
                408,
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"request body not received within {self.settings.body_timeout_seconds:g} s",
            )
        )
        response.force_close()
        await response.prepare(request)
        await response.write_eof()
        request.protocol.force_close()
        return response

    def _too_large(self) -> web.Response:
        limit = self.settings.max_body_bytes
        return error_response(
            gateway_error(
                413, grpc.StatusCode.RESOURCE_EXHAUSTED, f"request body larger than {limit} bytes"
            )
        )

    async def _fixed(self, request: web.Request, path: str) -> web.StreamResponse:
        if request.method not in ("GET", "HEAD"):
            if request.method == "OPTIONS":
                return web.Response(status=204, headers={"Allow": "GET, HEAD, OPTIONS"})
            return error_response(
                gateway_error(
                    self.settings.method_not_allowed_status,
                    grpc.StatusCode.UNIMPLEMENTED,
                    "Method Not Allowed",
                    [("Allow", "GET, HEAD, OPTIONS")],
                )
            )
        if path == OPENAPI_PATH:
            return web.Response(body=self._openapi_body, content_type="application/json")
        return await self._healthz()

    async def _healthz(self) -> web.Response:
        """200 when the target's grpc.health.v1 Check says SERVING, else 503."""
        if self._health_source is not None:
            status = await self._health_source()
            return web.Response(
                status=200 if status == "SERVING" else 503,
                body=dumps({"status": status}),
                content_type="application/json",
            )
        assert self._health is not None
        try:
            reply = await self._health(
                health_pb2.HealthCheckRequest(service=""),
                timeout=self.settings.health_timeout_seconds,
            )
            status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        except grpc.aio.AioRpcError as error:
            status = f"UNREACHABLE ({error.code().name})"
        http = 200 if status == "SERVING" else 503
        return web.Response(
            status=http, body=dumps({"status": status}), content_type="application/json"
        )


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()
