"""What each capability folder (audit/, dsar/, erasure/, provenance/, flow/) gives the app."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc
from google.protobuf.descriptor import ServiceDescriptor

from kaireon_server.platform.config import Settings
from kaireon_server.platform.db import Database
from kaireon_server.platform.db.listener import Listener
from kaireon_server.platform.signing import Signer


@dataclass
class ServiceContext:
    """Shared dependencies handed to every capability when the app is built."""

    settings: Settings
    db: Database
    signer: Signer
    # The process's one LISTEN connection; capabilities subscribe to their channels.
    listener: Listener
    # Free-form slots capabilities may share (e.g. a notifier); keyed by name.
    extras: Mapping[str, Any] = field(default_factory=dict)


class Capability(Protocol):
    """A served gRPC service plus its optional background work."""

    @property
    def descriptor(self) -> ServiceDescriptor: ...

    def add_to_server(self, server: grpc.aio.Server) -> None: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class SimpleCapability:
    """A capability with no background work."""

    def __init__(self, descriptor: ServiceDescriptor, servicer: Any, adder: Any) -> None:
        self._descriptor = descriptor
        self._servicer = servicer
        self._adder = adder

    @property
    def descriptor(self) -> ServiceDescriptor:
        return self._descriptor

    def add_to_server(self, server: grpc.aio.Server) -> None:
        self._adder(self._servicer, server)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None
