"""Minimum roles per RPC, read from the `(kaireon.auth.v1.min_role)` option in the protos.

The protos are the one visible place where each RPC declares who may call it;
the server refuses to start if a served method declares none.
"""

from __future__ import annotations

from collections.abc import Iterable

from google.protobuf.descriptor import ServiceDescriptor

from kaireon.auth.v1 import auth_pb2
from kaireon_server.platform.auth.identity import Role


class PolicyError(RuntimeError):
    pass


def method_path(service: ServiceDescriptor, method_name: str) -> str:
    return f"/{service.full_name}/{method_name}"


def build_policy(services: Iterable[ServiceDescriptor]) -> dict[str, Role]:
    policy: dict[str, Role] = {}
    for service in services:
        for method in service.methods:
            value = method.GetOptions().Extensions[auth_pb2.min_role]
            if value == auth_pb2.ROLE_UNSPECIFIED:
                raise PolicyError(f"{service.full_name}.{method.name} declares no min_role")
            policy[method_path(service, method.name)] = Role(value)
    return policy
