"""Run events and the hooks embedding code subscribes to (the service's recorder is one).

Order guarantees, per run attempt: on_node_start(n) precedes on_node_complete(n)
or on_node_failed(n); a node's hook is called only after the hooks of all its
dependencies; on_run_complete is the last call. Hooks are awaited inline, so
keep them short (queue the work); an exception in a hook is logged by type and
otherwise ignored, so embedding code cannot break a run.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

log = logging.getLogger(__name__)


class NodeState(enum.Enum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    SKIPPED = "skipped"
    FAILED = "failed"
    CANCELLED = "cancelled"


class RunState(enum.Enum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED)


class EventType(enum.Enum):
    NODE_STARTED = "node_started"
    NODE_COMPLETED = "node_completed"
    NODE_SKIPPED = "node_skipped"
    NODE_FAILED = "node_failed"
    RUN_FINISHED = "run_finished"


@dataclass
class NodeResult:
    """Where one node stands in the current run attempt."""

    node_id: str
    node_type: str
    state: NodeState = NodeState.PENDING
    # Execution attempts in this run attempt (0 when skipped or not started).
    attempts: int = 0
    error: str = ""
    cache_key: str = ""
    output_digest: str = ""
    started_at: datetime | None = None
    ended_at: datetime | None = None


@dataclass(frozen=True)
class NodeEvent:
    type: EventType
    tenant_id: str
    run_id: str
    # How many times the run has been started (1 + retries).
    run_attempt: int
    node_id: str
    node_type: str
    at: datetime
    # Copy of the node's status after the event.
    status: NodeResult
    # The node's output (COMPLETED, SKIPPED); None otherwise. Not persisted by the service.
    output: Any = None
    error: str = ""


@dataclass(frozen=True)
class RunResult:
    tenant_id: str
    run_id: str
    run_attempt: int
    state: RunState
    error: str
    started_at: datetime
    ended_at: datetime
    nodes: Mapping[str, NodeResult]
    # Outputs of completed and skipped nodes (skipped ones reloaded from checkpoints).
    outputs: Mapping[str, Any] = field(default_factory=dict)

    def executed(self) -> list[str]:
        return [n for n, r in self.nodes.items() if r.state is NodeState.COMPLETED]

    def skipped(self) -> list[str]:
        return [n for n, r in self.nodes.items() if r.state is NodeState.SKIPPED]


class RunHooks:
    """Override what you need; every method defaults to doing nothing."""

    async def on_node_start(self, event: NodeEvent) -> None:
        return None

    async def on_node_complete(self, event: NodeEvent) -> None:
        return None

    async def on_node_skipped(self, event: NodeEvent) -> None:
        return None

    async def on_node_failed(self, event: NodeEvent) -> None:
        return None

    async def on_run_complete(self, result: RunResult) -> None:
        return None


_NODE_METHODS = {
    EventType.NODE_STARTED: "on_node_start",
    EventType.NODE_COMPLETED: "on_node_complete",
    EventType.NODE_SKIPPED: "on_node_skipped",
    EventType.NODE_FAILED: "on_node_failed",
}


class HookDispatcher:
    """Calls every hook in order; a failing hook is logged and skipped."""

    def __init__(self, hooks: Sequence[RunHooks]) -> None:
        self._hooks = list(hooks)

    @property
    def active(self) -> bool:
        return bool(self._hooks)

    async def node(self, event: NodeEvent) -> None:
        method = _NODE_METHODS[event.type]
        for hook in self._hooks:
            try:
                await getattr(hook, method)(event)
            except Exception as exc:
                log.warning(
                    "flow hook failed",
                    extra={
                        "hook": type(hook).__name__,
                        "method": method,
                        "error_type": type(exc).__name__,
                    },
                )

    async def run_complete(self, result: RunResult) -> None:
        for hook in self._hooks:
            try:
                await hook.on_run_complete(result)
            except Exception as exc:
                log.warning(
                    "flow hook failed",
                    extra={
                        "hook": type(hook).__name__,
                        "method": "on_run_complete",
                        "error_type": type(exc).__name__,
                    },
                )
