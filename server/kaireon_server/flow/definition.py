"""Flow definitions as plain data: nodes {id, type, config, depends_on} plus run policy.

The JSON form (`definition_to_json` / `definition_from_json`) uses the protojson
field names (lowerCamelCase), so a definition stored in `flow_run.definition`,
one written in a YAML/JSON flow file and one sent over REST look the same.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from kaireon_server.platform.canonical import canonical_json, sha256_hex
from kaireon_server.platform.errors import FieldViolation, InvalidArgument


class FailureMode(enum.Enum):
    """What happens to nodes still running when another node fails."""

    # Running siblings finish and are checkpointed, so a retry reuses their work.
    FINISH_RUNNING = "FAILURE_MODE_FINISH_RUNNING"
    # Running siblings are interrupted at once; nothing of theirs is checkpointed.
    CANCEL_RUNNING = "FAILURE_MODE_CANCEL_RUNNING"


@dataclass(frozen=True)
class RetryPolicy:
    """Attempts in total (first included) and an exponential backoff between them."""

    max_attempts: int = 1
    initial_backoff_seconds: float = 0.5
    max_backoff_seconds: float = 30.0
    backoff_multiplier: float = 2.0

    def backoff(self, failed_attempts: int) -> float:
        """Seconds to wait after `failed_attempts` failures (1-based)."""
        delay = self.initial_backoff_seconds * self.backoff_multiplier ** (failed_attempts - 1)
        return float(min(delay, self.max_backoff_seconds))


@dataclass(frozen=True)
class NodeSpec:
    id: str
    type: str
    config: Mapping[str, Any] = field(default_factory=dict)
    depends_on: tuple[str, ...] = ()
    # None: the server default.
    timeout_seconds: float | None = None
    retry: RetryPolicy = RetryPolicy()


@dataclass(frozen=True)
class FlowDefinition:
    nodes: tuple[NodeSpec, ...]
    name: str = ""
    # 0: the runner's default.
    max_concurrency: int = 0
    on_failure: FailureMode = FailureMode.FINISH_RUNNING

    @cached_property
    def canonical(self) -> bytes:
        """The canonical JSON form (RFC 8785; computed once, definitions are frozen)."""
        return canonical_json(definition_to_json(self))

    @cached_property
    def digest(self) -> str:
        """sha256 of the canonical JSON form."""
        return sha256_hex(self.canonical)


def _retry_to_json(policy: RetryPolicy) -> dict[str, Any]:
    return {
        "maxAttempts": policy.max_attempts,
        "initialBackoffSeconds": policy.initial_backoff_seconds,
        "maxBackoffSeconds": policy.max_backoff_seconds,
        "backoffMultiplier": policy.backoff_multiplier,
    }


def definition_to_json(definition: FlowDefinition) -> dict[str, Any]:
    return {
        "name": definition.name,
        "maxConcurrency": definition.max_concurrency,
        "onFailure": definition.on_failure.value,
        "nodes": [
            {
                "id": node.id,
                "type": node.type,
                "config": dict(node.config),
                "dependsOn": list(node.depends_on),
                "timeoutSeconds": node.timeout_seconds or 0,
                "retry": _retry_to_json(node.retry),
            }
            for node in definition.nodes
        ],
    }


class _Reader:
    """Reads a JSON object, collecting violations under a field path."""

    def __init__(self, violations: list[FieldViolation]) -> None:
        self.violations = violations

    def bad(self, path: str, description: str) -> None:
        self.violations.append(FieldViolation(path, description))

    def get(self, obj: Mapping[str, Any], path: str, *names: str) -> Any:
        for name in names:
            if name in obj:
                return obj[name]
        return None

    def number(self, obj: Mapping[str, Any], path: str, *names: str, default: float) -> float:
        value = self.get(obj, path, *names)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.bad(f"{path}.{names[0]}", "must be a number")
            return default
        return float(value)

    def integer(self, obj: Mapping[str, Any], path: str, *names: str, default: int) -> int:
        value = self.number(obj, path, *names, default=float(default))
        if value != int(value):
            self.bad(f"{path}.{names[0]}", "must be an integer")
            return default
        return int(value)


# Both the protojson names and the proto field names are accepted on input,
# as protojson parsers do.
def _retry_from_json(reader: _Reader, raw: Any, path: str) -> RetryPolicy:
    if raw is None:
        return RetryPolicy()
    if not isinstance(raw, Mapping):
        reader.bad(path, "must be an object")
        return RetryPolicy()
    defaults = RetryPolicy()
    attempts = reader.integer(raw, path, "maxAttempts", "max_attempts", default=1) or 1
    initial = reader.number(
        raw,
        path,
        "initialBackoffSeconds",
        "initial_backoff_seconds",
        default=defaults.initial_backoff_seconds,
    )
    maximum = reader.number(
        raw, path, "maxBackoffSeconds", "max_backoff_seconds", default=defaults.max_backoff_seconds
    )
    multiplier = reader.number(
        raw, path, "backoffMultiplier", "backoff_multiplier", default=defaults.backoff_multiplier
    )
    return RetryPolicy(
        max_attempts=attempts,
        initial_backoff_seconds=initial or defaults.initial_backoff_seconds,
        max_backoff_seconds=maximum or defaults.max_backoff_seconds,
        backoff_multiplier=multiplier or defaults.backoff_multiplier,
    )


def _node_from_json(reader: _Reader, raw: Any, path: str) -> NodeSpec | None:
    if not isinstance(raw, Mapping):
        reader.bad(path, "must be an object")
        return None
    node_id, node_type = raw.get("id", ""), raw.get("type", "")
    if not isinstance(node_id, str):
        reader.bad(f"{path}.id", "must be a string")
        node_id = ""
    if not isinstance(node_type, str):
        reader.bad(f"{path}.type", "must be a string")
        node_type = ""
    config = raw.get("config") or {}
    if not isinstance(config, Mapping):
        reader.bad(f"{path}.config", "must be an object")
        config = {}
    deps = reader.get(raw, path, "dependsOn", "depends_on") or []
    if (
        not isinstance(deps, Sequence)
        or isinstance(deps, str)
        or not all(isinstance(d, str) for d in deps)
    ):
        reader.bad(f"{path}.depends_on", "must be a list of node ids")
        deps = []
    timeout = reader.number(raw, path, "timeoutSeconds", "timeout_seconds", default=0.0)
    retry = _retry_from_json(reader, raw.get("retry"), f"{path}.retry")
    return NodeSpec(
        id=node_id,
        type=node_type,
        config=dict(config),
        depends_on=tuple(deps),
        timeout_seconds=timeout or None,
        retry=retry,
    )


def definition_from_json(raw: Any, *, path: str = "definition") -> FlowDefinition:
    """Parse the JSON form; structural errors answer INVALID_ARGUMENT with field paths.

    Semantic checks (types, configs, dependencies, cycles) are `validation.validate`'s.
    """
    violations: list[FieldViolation] = []
    reader = _Reader(violations)
    if not isinstance(raw, Mapping):
        raise InvalidArgument.field(path, "must be an object")
    nodes_raw = raw.get("nodes", [])
    if not isinstance(nodes_raw, Sequence) or isinstance(nodes_raw, str):
        reader.bad(f"{path}.nodes", "must be a list of nodes")
        nodes_raw = []
    nodes = [_node_from_json(reader, n, f"{path}.nodes[{i}]") for i, n in enumerate(nodes_raw)]
    name = raw.get("name") or ""
    if not isinstance(name, str):
        reader.bad(f"{path}.name", "must be a string")
        name = ""
    concurrency = reader.integer(raw, path, "maxConcurrency", "max_concurrency", default=0)
    mode_raw = reader.get(raw, path, "onFailure", "on_failure") or "FAILURE_MODE_UNSPECIFIED"
    mode = FailureMode.FINISH_RUNNING
    if mode_raw not in ("FAILURE_MODE_UNSPECIFIED", 0):
        try:
            mode = FailureMode(mode_raw)
        except ValueError:
            reader.bad(
                f"{path}.on_failure", "must be FAILURE_MODE_FINISH_RUNNING or _CANCEL_RUNNING"
            )
    if violations:
        raise InvalidArgument(
            f"{violations[0].field}: {violations[0].description}",
            reason="INVALID_FLOW_DEFINITION",
            metadata={"field": violations[0].field},
            violations=violations,
        )
    return FlowDefinition(
        nodes=tuple(n for n in nodes if n is not None),
        name=name,
        max_concurrency=concurrency,
        on_failure=mode,
    )
