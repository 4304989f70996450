"""Typed clients over the generated stubs.

The stubs are the generated ones (fully typed); the channel underneath adds the
caller's metadata to every call (an interceptor), a default deadline for unary
calls and retries on UNAVAILABLE for idempotent methods — both through gRPC's
own service config, so gRPC core does the retrying. Idempotent = the method's
google.api.http rule is a GET, read from the same descriptors the server uses.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

import grpc
from google.api import annotations_pb2
from google.protobuf.descriptor import ServiceDescriptor

from kaireon.audit.v1 import audit_pb2, audit_pb2_grpc
from kaireon.dsar.v1 import dsar_pb2, dsar_pb2_grpc
from kaireon.erasure.v1 import erasure_pb2, erasure_pb2_grpc
from kaireon.flow.v1 import flow_pb2, flow_pb2_grpc
from kaireon.provenance.v1 import provenance_pb2, provenance_pb2_grpc
from kaireon.requests.v1 import requests_pb2, requests_pb2_grpc
from kaireon_client.config import ClientConfig

SERVICES: tuple[ServiceDescriptor, ...] = (
    audit_pb2.DESCRIPTOR.services_by_name["AuditService"],
    dsar_pb2.DESCRIPTOR.services_by_name["DsarService"],
    erasure_pb2.DESCRIPTOR.services_by_name["ErasureService"],
    flow_pb2.DESCRIPTOR.services_by_name["FlowRunnerService"],
    provenance_pb2.DESCRIPTOR.services_by_name["ProvenanceService"],
    requests_pb2.DESCRIPTOR.services_by_name["RequestService"],
)


def idempotent_methods(services: Iterable[ServiceDescriptor] = SERVICES) -> list[tuple[str, str]]:
    found = []
    for service in services:
        for method in service.methods:
            rule = method.GetOptions().Extensions[annotations_pb2.http]
            if rule.WhichOneof("pattern") == "get":
                found.append((service.full_name, method.name))
    return found


def service_config(config: ClientConfig) -> str:
    """gRPC service config: default deadline for unary calls, retries for idempotent ones."""
    reads = set(idempotent_methods())

    def names(unary: bool, idempotent: bool) -> list[dict[str, str]]:
        return [
            {"service": s.full_name, "method": m.name}
            for s in SERVICES
            for m in s.methods
            if (not m.server_streaming) == unary and ((s.full_name, m.name) in reads) == idempotent
        ]

    retry = {
        "maxAttempts": 4,
        "initialBackoff": "0.1s",
        "maxBackoff": "2s",
        "backoffMultiplier": 2,
        "retryableStatusCodes": ["UNAVAILABLE"],
    }
    deadline = f"{config.timeout:.3f}s"
    method_config: list[dict[str, Any]] = [
        {"name": names(True, True), "timeout": deadline, "retryPolicy": retry},
        {"name": names(True, False), "timeout": deadline},
        # Watches and downloads are long: retried when they cannot start, no default deadline.
        {"name": names(False, True), "retryPolicy": retry},
    ]
    return json.dumps({"methodConfig": [c for c in method_config if c["name"]]})


def channel_options(config: ClientConfig) -> list[tuple[str, Any]]:
    return [
        ("grpc.service_config", service_config(config)),
        ("grpc.enable_retries", 1),
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.max_send_message_length", config.max_message_bytes),
    ]


def channel_credentials(config: ClientConfig) -> grpc.ChannelCredentials | None:
    if config.ca_cert is None:
        return None
    key = config.client_key.read_bytes() if config.client_key else None
    cert = config.client_cert.read_bytes() if config.client_cert else None
    return grpc.ssl_channel_credentials(
        root_certificates=config.ca_cert.read_bytes(), private_key=key, certificate_chain=cert
    )


def _with_metadata(details: Any, extra: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    existing = tuple(details.metadata or ())
    names = {k for k, _ in existing}
    # Per-call metadata wins over the client's defaults.
    return existing + tuple((k, v) for k, v in extra if k not in names)


class _SyncDetails(grpc.ClientCallDetails):
    def __init__(self, base: Any, metadata: tuple[tuple[str, str], ...]) -> None:
        self.method = base.method
        self.timeout = base.timeout
        self.metadata = metadata
        self.credentials = base.credentials
        self.wait_for_ready = base.wait_for_ready
        self.compression = getattr(base, "compression", None)


class _SyncMetadataInterceptor(
    grpc.UnaryUnaryClientInterceptor,  # type: ignore[type-arg]
    grpc.UnaryStreamClientInterceptor,  # type: ignore[type-arg]
):
    def __init__(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self._metadata = metadata

    def intercept_unary_unary(
        self, continuation: Callable[..., Any], details: Any, request: Any
    ) -> Any:
        return continuation(_SyncDetails(details, _with_metadata(details, self._metadata)), request)

    def intercept_unary_stream(
        self, continuation: Callable[..., Any], details: Any, request: Any
    ) -> Any:
        return continuation(_SyncDetails(details, _with_metadata(details, self._metadata)), request)


class _AsyncMetadataInterceptor(
    grpc.aio.UnaryUnaryClientInterceptor,  # type: ignore[type-arg]
    grpc.aio.UnaryStreamClientInterceptor,  # type: ignore[type-arg]
):
    def __init__(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self._metadata = metadata

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        return grpc.aio.ClientCallDetails(
            details.method,
            details.timeout,
            grpc.aio.Metadata(*_with_metadata(details, self._metadata)),
            details.credentials,
            details.wait_for_ready,
        )

    async def intercept_unary_unary(
        self, continuation: Any, client_call_details: Any, request: Any
    ) -> Any:
        return await continuation(self._details(client_call_details), request)

    async def intercept_unary_stream(
        self, continuation: Any, client_call_details: Any, request: Any
    ) -> Any:
        return await continuation(self._details(client_call_details), request)


class KaireonClient:
    """Blocking client. Use as a context manager, or call close()."""

    def __init__(self, config: ClientConfig | None = None) -> None:
        self.config = config or ClientConfig.from_env()
        credentials = channel_credentials(self.config)
        options = channel_options(self.config)
        raw = (
            grpc.secure_channel(self.config.target, credentials, options)
            if credentials
            else grpc.insecure_channel(self.config.target, options)
        )
        self._raw = raw
        self.channel = grpc.intercept_channel(raw, _SyncMetadataInterceptor(self.config.metadata()))
        self.audit = audit_pb2_grpc.AuditServiceStub(self.channel)
        self.dsar = dsar_pb2_grpc.DsarServiceStub(self.channel)
        self.erasure = erasure_pb2_grpc.ErasureServiceStub(self.channel)
        self.flow = flow_pb2_grpc.FlowRunnerServiceStub(self.channel)
        self.provenance = provenance_pb2_grpc.ProvenanceServiceStub(self.channel)
        self.requests = requests_pb2_grpc.RequestServiceStub(self.channel)

    def close(self) -> None:
        self._raw.close()

    def __enter__(self) -> KaireonClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncKaireonClient:
    """asyncio client. Use as an async context manager, or await close()."""

    def __init__(self, config: ClientConfig | None = None) -> None:
        self.config = config or ClientConfig.from_env()
        credentials = channel_credentials(self.config)
        options = channel_options(self.config)
        interceptors: list[Any] = [_AsyncMetadataInterceptor(self.config.metadata())]
        self.channel = (
            grpc.aio.secure_channel(
                self.config.target, credentials, options, interceptors=interceptors
            )
            if credentials
            else grpc.aio.insecure_channel(self.config.target, options, interceptors=interceptors)
        )
        self.audit = audit_pb2_grpc.AuditServiceStub(self.channel)
        self.dsar = dsar_pb2_grpc.DsarServiceStub(self.channel)
        self.erasure = erasure_pb2_grpc.ErasureServiceStub(self.channel)
        self.flow = flow_pb2_grpc.FlowRunnerServiceStub(self.channel)
        self.provenance = provenance_pb2_grpc.ProvenanceServiceStub(self.channel)
        self.requests = requests_pb2_grpc.RequestServiceStub(self.channel)

    async def close(self) -> None:
        await self.channel.close(None)

    async def __aenter__(self) -> AsyncKaireonClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
