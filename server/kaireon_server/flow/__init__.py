"""FlowRunnerService: resumable DAG pipeline runs with per-node checkpoints.

Embedding the runner without the gRPC service:

    registry = default_registry()
    plan = validate(definition_from_json(doc), registry)
    store = PostgresCheckpointStore(db)
    runner = FlowRunner(store, hooks=[MyHooks()], services=NodeServices(db=db))
    result = await runner.run(plan, tenant_id="acme", run_id="nightly-2024-05-01")
"""

from kaireon_server.flow.definition import (
    FailureMode,
    FlowDefinition,
    NodeSpec,
    RetryPolicy,
    definition_from_json,
    definition_to_json,
)
from kaireon_server.flow.hooks import (
    EventType,
    NodeEvent,
    NodeResult,
    NodeState,
    RunHooks,
    RunResult,
    RunState,
)
from kaireon_server.flow.nodes import (
    ENTRY_POINT_GROUP,
    NodeContext,
    NodeError,
    NodeRegistry,
    NodeServices,
    NodeType,
    default_registry,
)
from kaireon_server.flow.runner import CancelToken, FlowRunner
from kaireon_server.flow.stores import (
    Checkpoint,
    CheckpointStore,
    InMemoryCheckpointStore,
    PostgresCheckpointStore,
)
from kaireon_server.flow.validation import Plan, validate

__all__ = [
    "ENTRY_POINT_GROUP",
    "CancelToken",
    "Checkpoint",
    "CheckpointStore",
    "EventType",
    "FailureMode",
    "FlowDefinition",
    "FlowRunner",
    "InMemoryCheckpointStore",
    "NodeContext",
    "NodeError",
    "NodeEvent",
    "NodeRegistry",
    "NodeResult",
    "NodeServices",
    "NodeSpec",
    "NodeState",
    "NodeType",
    "Plan",
    "PostgresCheckpointStore",
    "RetryPolicy",
    "RunHooks",
    "RunResult",
    "RunState",
    "default_registry",
    "definition_from_json",
    "definition_to_json",
    "validate",
]
