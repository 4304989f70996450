"""Validation of a definition before anything runs, producing the executable Plan.

Every problem is reported at once as INVALID_ARGUMENT with one google.rpc
BadRequest field violation per problem; the field path names the node
(`definition.nodes[3].config.where`) and the description names its id. The
ErrorInfo metadata carries the first offending node's id and index.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kaireon_server.flow.definition import FlowDefinition, NodeSpec
from kaireon_server.flow.keys import config_digest
from kaireon_server.flow.nodes.base import ConfigError, NodeSetup, NodeType
from kaireon_server.flow.nodes.registry import NodeRegistry
from kaireon_server.flow.settings import FlowLimits
from kaireon_server.platform.canonical import canonical_json
from kaireon_server.platform.errors import FieldViolation, InvalidArgument

NODE_ID = re.compile(r"[A-Za-z0-9_.-]{1,128}")
MAX_VIOLATIONS = 50
MAX_ATTEMPTS = 10


@dataclass(frozen=True)
class PlannedNode:
    spec: NodeSpec
    index: int
    impl: NodeType[Any]
    config: Any
    version: str
    timeout_seconds: float
    dependents: tuple[str, ...]
    # sha256 of the canonical JSON of spec.config (part of the cache key).
    config_digest: str

    @property
    def id(self) -> str:
        return self.spec.id


@dataclass(frozen=True)
class Plan:
    definition: FlowDefinition
    # In definition order.
    nodes: Mapping[str, PlannedNode]
    # A topological order (definition order among independent nodes).
    order: tuple[str, ...]
    max_concurrency: int


@dataclass
class _Problem:
    index: int
    node_id: str
    violation: FieldViolation


class _Collector:
    def __init__(self) -> None:
        self.problems: list[_Problem] = []

    def add(self, index: int, node_id: str, field: str, description: str) -> None:
        if len(self.problems) < MAX_VIOLATIONS:
            self.problems.append(_Problem(index, node_id, FieldViolation(field, description)))

    def raise_if_any(self) -> None:
        if not self.problems:
            return
        first = self.problems[0]
        metadata = {"field": first.violation.field}
        if first.index >= 0:
            metadata |= {"node_id": first.node_id, "node_index": str(first.index)}
        raise InvalidArgument(
            f"{first.violation.field}: {first.violation.description}",
            reason="INVALID_FLOW_DEFINITION",
            metadata=metadata,
            violations=[p.violation for p in self.problems],
        )


def _check_policy(spec: NodeSpec, path: str, limits: FlowLimits, out: _Collector, i: int) -> None:
    if (
        spec.timeout_seconds is not None
        and not 0 < spec.timeout_seconds <= limits.node_timeout_seconds
    ):
        out.add(
            i,
            spec.id,
            f"{path}.timeout_seconds",
            f"node '{spec.id}': must be > 0 and at most {limits.node_timeout_seconds:g}",
        )
    retry = spec.retry
    if not 1 <= retry.max_attempts <= MAX_ATTEMPTS:
        out.add(
            i,
            spec.id,
            f"{path}.retry.max_attempts",
            f"node '{spec.id}': must be from 1 to {MAX_ATTEMPTS}",
        )
    if retry.initial_backoff_seconds < 0 or retry.max_backoff_seconds < 0:
        out.add(i, spec.id, f"{path}.retry", f"node '{spec.id}': backoff must not be negative")
    if retry.backoff_multiplier < 1:
        out.add(
            i, spec.id, f"{path}.retry.backoff_multiplier", f"node '{spec.id}': must be at least 1"
        )


def _find_cycle(remaining: set[str], deps: Mapping[str, tuple[str, ...]]) -> list[str]:
    """A dependency cycle among `remaining` (nodes Kahn's algorithm could not order)."""
    start = next(iter(sorted(remaining)))
    path: list[str] = []
    seen: dict[str, int] = {}
    node = start
    while node not in seen:
        seen[node] = len(path)
        path.append(node)
        node = next(d for d in deps[node] if d in remaining)
    return [*path[seen[node] :], node]


def validate(
    definition: FlowDefinition,
    registry: NodeRegistry,
    *,
    limits: FlowLimits | None = None,
    env: Mapping[str, str] | None = None,
    path: str = "definition",
) -> Plan:
    """Check `definition` completely; raise InvalidArgument or return its Plan."""
    limits = limits or FlowLimits()
    env = env or {}
    out = _Collector()
    nodes = definition.nodes
    if not nodes:
        out.add(-1, "", f"{path}.nodes", "a definition needs at least one node")
    if len(nodes) > limits.max_nodes:
        out.add(-1, "", f"{path}.nodes", f"at most {limits.max_nodes} nodes")
    out.raise_if_any()
    if definition.max_concurrency < 0:
        out.add(-1, "", f"{path}.max_concurrency", "must not be negative")

    first_index: dict[str, int] = {}
    for i, spec in enumerate(nodes):
        node_path = f"{path}.nodes[{i}]"
        if not NODE_ID.fullmatch(spec.id):
            out.add(
                i,
                spec.id,
                f"{node_path}.id",
                "node ids are 1 to 128 characters of A-Z, a-z, 0-9, '_', '.', '-'",
            )
        elif spec.id in first_index:
            out.add(
                i,
                spec.id,
                f"{node_path}.id",
                f"duplicate node id '{spec.id}' (first used by nodes[{first_index[spec.id]}])",
            )
        else:
            first_index[spec.id] = i
    ids = set(first_index)

    impls: dict[int, NodeType[Any]] = {}
    configs: dict[int, Any] = {}
    for i, spec in enumerate(nodes):
        node_path = f"{path}.nodes[{i}]"
        deps_ok = True
        for k, dep in enumerate(spec.depends_on):
            if dep == spec.id:
                out.add(
                    i,
                    spec.id,
                    f"{node_path}.depends_on[{k}]",
                    f"node '{spec.id}' depends on itself (a cycle)",
                )
                deps_ok = False
            elif dep not in ids:
                out.add(
                    i,
                    spec.id,
                    f"{node_path}.depends_on[{k}]",
                    f"node '{spec.id}' depends on unknown node '{dep}'",
                )
                deps_ok = False
            elif dep in spec.depends_on[:k]:
                out.add(
                    i,
                    spec.id,
                    f"{node_path}.depends_on[{k}]",
                    f"node '{spec.id}' lists '{dep}' twice",
                )
        _check_policy(spec, node_path, limits, out, i)
        try:
            canonical_json(dict(spec.config))
        except (ValueError, TypeError):
            # The config is hashed into the cache key, so it must canonicalise.
            out.add(
                i,
                spec.id,
                f"{node_path}.config",
                f"node '{spec.id}': config is not canonical JSON (NaN, infinity or a "
                "number beyond 2^53)",
            )
            continue
        impl = registry.get(spec.type)
        if impl is None:
            out.add(
                i,
                spec.id,
                f"{node_path}.type",
                f"node '{spec.id}': unknown node type '{spec.type}'",
            )
            continue
        impls[i] = impl
        if not deps_ok:
            continue
        try:
            configs[i] = impl.parse_config(
                spec.config, NodeSetup(spec.id, tuple(spec.depends_on), env)
            )
        except ConfigError as exc:
            field = f"{node_path}.config" + (f".{exc.path}" if exc.path else "")
            out.add(i, spec.id, field, f"node '{spec.id}' ({spec.type}): {exc.message}")
    out.raise_if_any()

    deps = {spec.id: spec.depends_on for spec in nodes}
    dependents: dict[str, list[str]] = {spec.id: [] for spec in nodes}
    waiting = {spec.id: len(spec.depends_on) for spec in nodes}
    for spec in nodes:
        for dep in spec.depends_on:
            dependents[dep].append(spec.id)
    ready = deque(spec.id for spec in nodes if waiting[spec.id] == 0)
    order: list[str] = []
    while ready:
        node_id = ready.popleft()
        order.append(node_id)
        for child in dependents[node_id]:
            waiting[child] -= 1
            if waiting[child] == 0:
                ready.append(child)
    if len(order) != len(nodes):
        cycle = _find_cycle(set(deps) - set(order), deps)
        i = first_index[cycle[0]]
        out.add(
            i, cycle[0], f"{path}.nodes[{i}].depends_on", f"dependency cycle: {' -> '.join(cycle)}"
        )
        out.raise_if_any()

    planned = {}
    for i, spec in enumerate(nodes):
        config = configs[i]
        planned[spec.id] = PlannedNode(
            spec=spec,
            index=i,
            impl=impls[i],
            config=config,
            version=impls[i].implementation_version(config),
            timeout_seconds=spec.timeout_seconds or limits.node_timeout_seconds,
            dependents=tuple(dependents[spec.id]),
            config_digest=config_digest(spec.config),
        )
    concurrency = definition.max_concurrency or limits.max_concurrency
    return Plan(definition, planned, tuple(order), min(concurrency, limits.max_concurrency))
