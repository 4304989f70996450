"""A descriptor pool view for server reflection that also resolves method symbols.

grpcurl asks reflection for the file containing `pkg.Service.Method` when it
describes a method; protobuf's upb-based pool only resolves services and
messages, so `grpcurl describe pkg.Service.Method` would fail. This view falls
back to the service's file when the last component names one of its methods.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pool
from google.protobuf.descriptor import FileDescriptor


class MethodResolvingPool:
    def __init__(self, pool: descriptor_pool.DescriptorPool | None = None) -> None:
        self._pool = pool or descriptor_pool.Default()

    def FindFileContainingSymbol(self, symbol: str) -> FileDescriptor:
        try:
            return self._pool.FindFileContainingSymbol(symbol)
        except KeyError:
            service_name, _, method = symbol.rpartition(".")
            if service_name:
                try:
                    service = self._pool.FindServiceByName(service_name)
                except KeyError:
                    pass
                else:
                    if method in service.methods_by_name:
                        return service.file
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)
