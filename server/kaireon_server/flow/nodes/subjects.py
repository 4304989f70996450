"""Sinks that act on data subjects through the DSAR and erasure domain services."""

from __future__ import annotations

from typing import Any

from kaireon_server.flow.nodes.base import NodeType

SUBJECT_NODE_TYPES: list[NodeType[Any]] = []
