"""The node-type registry: built-ins plus custom types from Python entry points.

A distribution adds node types by declaring entry points in the group
`kaireon.flow.nodes`; the entry point's name is the node type's name and its
object is a NodeType subclass (instantiated without arguments) or instance:

    [project.entry-points."kaireon.flow.nodes"]
    "acme.geocode" = "acme_flow.nodes:Geocode"

Custom types cannot replace built-ins. A plugin that fails to load is logged
(by name and exception type) and left out, so one broken plugin cannot stop
the server; definitions using it then fail validation as an unknown type.
"""

from __future__ import annotations

import importlib.metadata
import logging
from collections.abc import Iterable
from typing import Any

from kaireon_server.flow.nodes.base import NodeType

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "kaireon.flow.nodes"


class NodeRegistry:
    def __init__(self, types: Iterable[NodeType[Any]] = ()) -> None:
        self._types: dict[str, NodeType[Any]] = {}
        self._builtin: set[str] = set()
        for node_type in types:
            self.register(node_type)

    def register(self, node_type: NodeType[Any], *, builtin: bool = False) -> None:
        name = node_type.name
        if name in self._types:
            raise ValueError(f"node type {name!r} is already registered")
        self._types[name] = node_type
        if builtin:
            self._builtin.add(name)

    def get(self, name: str) -> NodeType[Any] | None:
        return self._types.get(name)

    def names(self) -> list[str]:
        return sorted(self._types)

    def load_entry_points(self, group: str = ENTRY_POINT_GROUP) -> list[str]:
        """Register every entry point of `group`; return the names added."""
        added: list[str] = []
        for entry in importlib.metadata.entry_points(group=group):
            try:
                node_type = _instantiate(entry.load())
            except Exception as exc:
                log.error(
                    "flow node plugin failed to load",
                    extra={"entry_point": entry.name, "error_type": type(exc).__name__},
                )
                continue
            if node_type.name != entry.name:
                log.error(
                    "flow node plugin name mismatch",
                    extra={"entry_point": entry.name, "node_type": node_type.name},
                )
                continue
            if entry.name in self._types:
                log.error(
                    "flow node plugin shadows a registered type", extra={"entry_point": entry.name}
                )
                continue
            self.register(node_type)
            added.append(entry.name)
        return added


def _instantiate(obj: Any) -> NodeType[Any]:
    if isinstance(obj, type) and issubclass(obj, NodeType):
        return obj()
    if isinstance(obj, NodeType):
        return obj
    raise TypeError("entry point is neither a NodeType subclass nor an instance")


def default_registry(*, entry_points: bool = True) -> NodeRegistry:
    """Built-in node types, plus entry-point plugins unless disabled."""
    from kaireon_server.flow.nodes import sinks, sources, transforms

    registry = NodeRegistry()
    for module in (sources, transforms, sinks):
        for node_type in module.NODE_TYPES:
            registry.register(node_type, builtin=True)
    if entry_points:
        registry.load_entry_points()
    return registry
