"""Every Kaireon RPC, discovered from the generated descriptors, and one way to call any of them.

The list comes from walking the generated package (clients/python/kaireon/), not
from a hand-kept table, so a new service or method shows up here by itself and
the table-driven tests fail until they cover it.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

import kaireon


def _pb2_modules() -> list[Any]:
    modules = []
    for info in pkgutil.walk_packages(kaireon.__path__, prefix="kaireon."):
        if info.name.endswith("_pb2"):
            modules.append(importlib.import_module(info.name))
    return modules


def discover_methods() -> list[MethodDescriptor]:
    """Every method of every service declared in the generated kaireon protos."""
    methods: list[MethodDescriptor] = []
    for module in _pb2_modules():
        for service in module.DESCRIPTOR.services_by_name.values():
            methods.extend(service.methods)
    return sorted(methods, key=lambda m: m.full_name)


METHODS: Sequence[MethodDescriptor] = discover_methods()
METHOD_NAMES: Sequence[str] = [f"{m.containing_service.name}.{m.name}" for m in METHODS]
BY_NAME: dict[str, MethodDescriptor] = dict(zip(METHOD_NAMES, METHODS, strict=True))


def path(method: MethodDescriptor) -> str:
    return f"/{method.containing_service.full_name}/{method.name}"


def request_class(method: MethodDescriptor) -> type[Message]:
    return GetMessageClass(method.input_type)


def response_class(method: MethodDescriptor) -> type[Message]:
    return GetMessageClass(method.output_type)


@dataclass
class Outcome:
    """What one call gave: the status code, the responses received, the error text."""

    code: grpc.StatusCode
    responses: list[Message] = field(default_factory=list)
    details: str = ""
    trailing: tuple[tuple[str, Any], ...] = ()

    @property
    def ok(self) -> bool:
        return self.code is grpc.StatusCode.OK


async def call(
    channel: grpc.aio.Channel,
    method: MethodDescriptor,
    request: Message | bytes,
    metadata: Sequence[tuple[str, str]],
    *,
    timeout: float = 15.0,
    max_items: int = 3,
) -> Outcome:
    """Calls `method` (unary or server-streaming) with a message or raw bytes.

    A stream is read until it ends or `max_items` responses arrived (watches
    stay open); then it is cancelled, which is an OK outcome.
    """
    out = response_class(method)

    def serialize(value: Message | bytes) -> bytes:
        return value if isinstance(value, bytes) else value.SerializeToString()

    responses: list[Message] = []
    try:
        if method.server_streaming:
            stream = channel.unary_stream(
                path(method), request_serializer=serialize, response_deserializer=out.FromString
            )(request, metadata=tuple(metadata), timeout=timeout)
            try:
                async for item in stream:
                    responses.append(item)
                    if len(responses) >= max_items:
                        break
            finally:
                stream.cancel()
        else:
            unary = channel.unary_unary(
                path(method), request_serializer=serialize, response_deserializer=out.FromString
            )
            responses.append(await unary(request, metadata=tuple(metadata), timeout=timeout))
    except grpc.aio.AioRpcError as error:
        return Outcome(
            error.code(), responses, error.details() or "", tuple(error.trailing_metadata() or ())
        )
    return Outcome(grpc.StatusCode.OK, responses)
