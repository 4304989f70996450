"""Server-streaming RPCs over HTTP: NDJSON lines, or raw bytes for HttpBody chunks."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import grpc
from aiohttp import web
from google.protobuf.message import Message

from kaireon_server.gateway.errors import ErrorReply, error_response, from_rpc_error, gateway_error
from kaireon_server.gateway.headers import response_headers
from kaireon_server.gateway.render import OCTET_STREAM, dumps, render_message, response_json
from kaireon_server.gateway.routes import Route

_log = logging.getLogger(__name__)

# The body is a sequence of JSON documents, not one; say so (grpc-gateway
# sends application/json, which trips JSON-document parsers).
NDJSON_CONTENT_TYPE = "application/x-ndjson"

StreamCall = grpc.aio.UnaryStreamCall[Message, Message]


def result_line(route: Route, message: Message) -> bytes:
    return dumps({"result": response_json(route, message)}) + b"\n"


def error_line(reply: ErrorReply) -> bytes:
    return dumps({"error": reply.body()}) + b"\n"


async def forward_stream(
    request: web.Request, route: Route, call: StreamCall, passthrough: frozenset[str]
) -> web.StreamResponse:
    """Streams the call's messages, one write (one flushed chunk) per message.

    An error before the first message gets its mapped HTTP status; after the
    first message the status is already 200, so NDJSON streams end with an
    {"error": ...} line and raw streams are cut off (an incomplete chunked
    body is how HTTP says a download failed).
    """
    messages = call.__aiter__()
    try:
        first: Message | None = await anext(messages)
    except StopAsyncIteration:
        first = None
    except grpc.aio.AioRpcError as error:
        reply = from_rpc_error(error)
        reply.headers[:0] = response_headers(
            error.initial_metadata(), error.trailing_metadata(), passthrough
        )
        if route.raw_response_body:
            return error_response(reply)
        return web.Response(
            status=reply.status,
            body=error_line(reply),
            headers=[*reply.headers, ("Content-Type", NDJSON_CONTENT_TYPE)],
        )
    response = web.StreamResponse(status=200)
    for name, value in response_headers(await call.initial_metadata(), None, passthrough):
        response.headers.add(name, value)
    response.headers["Content-Type"] = _content_type(route, first)
    # Reverse proxies (nginx) buffer responses unless told not to.
    response.headers["X-Accel-Buffering"] = "no"
    await response.prepare(request)
    if first is None:
        await response.write_eof()
    elif not await _pump(route, first, messages, response) and request.transport is not None:
        # Closing without the final empty chunk: the client sees a truncated
        # body instead of a complete-looking, corrupt download.
        request.transport.close()
    return response


async def _pump(
    route: Route, first: Message, messages: AsyncIterator[Message], response: web.StreamResponse
) -> bool:
    """Writes every message; False when the connection must be dropped."""
    tail = b""
    try:
        await response.write(_encode(route, first))
        async for message in messages:
            await response.write(_encode(route, message))
    except grpc.aio.AioRpcError as error:
        if route.raw_response_body:
            _log.info("%s failed mid-stream (%s); cutting the body", route.grpc_path, error.code())
            return False
        tail = error_line(from_rpc_error(error))
    except ConnectionError:
        return False  # the client went away; the caller cancels the call
    except Exception:
        _log.exception("%s: cannot render a stream message", route.grpc_path)
        if route.raw_response_body:
            return False
        reply = gateway_error(500, grpc.StatusCode.INTERNAL, "failed to marshal response message")
        tail = error_line(reply)
    try:
        if tail:
            await response.write(tail)
        await response.write_eof()
    except ConnectionError:
        return False
    return True


def _encode(route: Route, message: Message) -> bytes:
    if route.raw_response_body:
        return render_message(route, message).body
    return result_line(route, message)


def _content_type(route: Route, first: Message | None) -> str:
    if not route.raw_response_body:
        return NDJSON_CONTENT_TYPE
    if first is None:
        return OCTET_STREAM
    return render_message(route, first).content_type
