"""What each capability folder (audit/, dsar/, erasure/, provenance/, flow/) gives the app.

Each capability's service.py has a `build(ctx) -> Capability`; app.py lists
those functions (`CAPABILITIES`), so the import graph shows every capability.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

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


class Capability(Protocol):
    """A served gRPC service plus its optional background work."""

    @property
    def descriptor(self) -> ServiceDescriptor: ...

    def add_to_server(self, server: grpc.aio.Server) -> None: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


# A capability's service.py `build`.
Build = Callable[[ServiceContext], Capability]

Servicer = TypeVar("Servicer")


class SimpleCapability(Generic[Servicer]):
    """A capability with no background work: a servicer and its generated
    `add_<Service>Servicer_to_server` function."""

    def __init__(
        self,
        descriptor: ServiceDescriptor,
        servicer: Servicer,
        adder: Callable[[Servicer, grpc.aio.Server], None],
    ) -> None:
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
