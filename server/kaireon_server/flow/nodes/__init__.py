"""Node types: the contract (base), the registry (built-ins + entry points) and the catalogue."""

from kaireon_server.flow.nodes.base import (
    Config,
    ConfigError,
    NodeContext,
    NodeError,
    NodeServices,
    NodeSetup,
    NodeType,
    Records,
)
from kaireon_server.flow.nodes.registry import ENTRY_POINT_GROUP, NodeRegistry, default_registry

__all__ = [
    "ENTRY_POINT_GROUP",
    "Config",
    "ConfigError",
    "NodeContext",
    "NodeError",
    "NodeRegistry",
    "NodeServices",
    "NodeSetup",
    "NodeType",
    "Records",
    "default_registry",
]
