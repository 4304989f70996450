"""The resumable DAG runner.

Scheduling: a node becomes ready when all its dependencies completed or were
skipped; ready nodes start in definition order, at most `plan.max_concurrency`
at once. Before starting a node the runner computes its cache key (keys.py)
from its dependencies' output digests; if the run has a checkpoint for the
node with that key, the node is SKIPPED and its output reloaded from the
checkpoint. Otherwise it runs, with its timeout and retry policy, and on
success its output is checkpointed (atomically with the node's own database
writes, see stores.py) before on_node_complete fires and its dependents are
released.

Failure: the first node whose attempts are exhausted fails the run. No further
node starts. Nodes already running FINISH and are checkpointed (the default,
FailureMode.FINISH_RUNNING: their work is valid and a retry reuses it), or are
interrupted when the definition asks for FailureMode.CANCEL_RUNNING. Nodes
never started end CANCELLED.

Cancellation (CancelToken): running nodes are interrupted at once, unless
already committing their checkpoint (a commit is never interrupted, so a
stored checkpoint always means a completed node); the run ends CANCELLED.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from kaireon_server.flow.definition import FailureMode
from kaireon_server.flow.hooks import (
    EventType,
    HookDispatcher,
    NodeEvent,
    NodeResult,
    NodeState,
    RunHooks,
    RunResult,
    RunState,
)
from kaireon_server.flow.keys import cache_key, output_digest
from kaireon_server.flow.nodes.base import NodeContext, NodeError, NodeServices
from kaireon_server.flow.stores import Checkpoint, CheckpointStore
from kaireon_server.flow.validation import Plan, PlannedNode
from kaireon_server.platform.observability import metrics, tracing


def _now() -> datetime:
    return datetime.now(UTC)


class CancelToken:
    """Asks a run to stop; `reason` becomes the run's error text."""

    def __init__(self) -> None:
        self.reason = ""
        self._callbacks: list[Callable[[], None]] = []

    @property
    def cancelled(self) -> bool:
        return bool(self.reason)

    def cancel(self, reason: str = "cancelled") -> None:
        if self.cancelled:
            return
        self.reason = reason
        for callback in self._callbacks:
            callback()

    def on_cancel(self, callback: Callable[[], None]) -> None:
        self._callbacks.append(callback)
        if self.cancelled:
            callback()


@dataclass
class _Running:
    key: str
    attempts: int = 0
    # True while the checkpoint commits: the task is not interrupted then.
    committing: bool = False
    task: asyncio.Task[_Outcome] | None = None


@dataclass(frozen=True)
class _Outcome:
    ok: bool
    attempts: int
    output: Any = None
    digest: str = ""
    error: str = ""


def describe_failure(exc: BaseException, timeout: float) -> tuple[str, bool]:
    """(error text, retryable). Texts never quote data: they are shown to callers."""
    if isinstance(exc, NodeError):
        return exc.message, exc.retryable
    if isinstance(exc, TimeoutError):
        return f"timed out after {timeout:g}s", True
    if isinstance(exc, asyncpg.PostgresError):
        return f"database error (SQLSTATE {exc.sqlstate})", True
    return f"unexpected error ({type(exc).__name__})", True


class FlowRunner:
    def __init__(
        self,
        store: CheckpointStore,
        *,
        hooks: Sequence[RunHooks] = (),
        services: NodeServices | None = None,
    ) -> None:
        self.store = store
        self.hooks = HookDispatcher(hooks)
        self.services = services or NodeServices()

    async def run(
        self,
        plan: Plan,
        *,
        tenant_id: str,
        run_id: str,
        run_attempt: int = 1,
        cancel: CancelToken | None = None,
        actor: str = "flow",
        checkpoints: Mapping[str, Checkpoint] | None = None,
    ) -> RunResult:
        """`checkpoints`: the run's, when the caller knows them (a new run has
        none); None reads them from the store."""
        return await _Execution(
            self,
            plan,
            tenant_id=tenant_id,
            run_id=run_id,
            run_attempt=run_attempt,
            cancel=cancel,
            actor=actor,
            checkpoints=checkpoints,
        ).run()


class _Execution:
    """One run attempt: the scheduler state lives here."""

    def __init__(
        self,
        runner: FlowRunner,
        plan: Plan,
        *,
        tenant_id: str,
        run_id: str,
        run_attempt: int,
        cancel: CancelToken | None,
        actor: str,
        checkpoints: Mapping[str, Checkpoint] | None,
    ) -> None:
        self.runner = runner
        self.known_checkpoints = checkpoints
        self.plan = plan
        self.actor = actor
        self.tenant_id = tenant_id
        self.run_id = run_id
        self.run_attempt = run_attempt
        self.token = cancel or CancelToken()
        self.results = {nid: NodeResult(nid, pn.spec.type) for nid, pn in plan.nodes.items()}
        self.outputs: dict[str, Any] = {}
        self.digests: dict[str, str] = {}
        self.waiting = {nid: len(pn.spec.depends_on) for nid, pn in plan.nodes.items()}
        self.ready: deque[str] = deque(n for n in plan.nodes if self.waiting[n] == 0)
        self.running: dict[str, _Running] = {}
        # Finished node ids; None is the cancellation wake-up.
        self.finished: asyncio.Queue[str | None] = asyncio.Queue()
        self.error = ""
        self.final_state: RunState | None = None
        # The store bound to this run attempt (CheckpointStore.session), set by run().
        self.store: CheckpointStore = runner.store

    async def emit(self, kind: EventType, nid: str, output: Any = None) -> None:
        if not self.runner.hooks.active:
            return
        status = dataclasses.replace(self.results[nid])
        await self.runner.hooks.node(
            NodeEvent(
                kind,
                self.tenant_id,
                self.run_id,
                self.run_attempt,
                nid,
                status.node_type,
                _now(),
                status,
                output,
                status.error,
            )
        )

    def release(self, nid: str) -> None:
        for child in self.plan.nodes[nid].dependents:
            self.waiting[child] -= 1
            if self.waiting[child] == 0:
                self.ready.append(child)

    def stop(self, state: RunState, error: str, *, interrupt: bool) -> None:
        if self.final_state is None:
            self.final_state, self.error = state, error
        if interrupt:
            for entry in self.running.values():
                if not entry.committing and entry.task is not None:
                    entry.task.cancel()

    async def run(self) -> RunResult:
        async with self.runner.store.session(self.tenant_id, self.run_id) as store:
            self.store = store
            return await self._run()

    async def _run(self) -> RunResult:
        started = _now()
        checkpoints = self.known_checkpoints
        if checkpoints is None:
            checkpoints = await self.store.load(self.tenant_id, self.run_id)
        self.token.on_cancel(lambda: self.finished.put_nowait(None))
        try:
            while True:
                while (
                    self.ready
                    and self.final_state is None
                    and (len(self.running) < self.plan.max_concurrency)
                ):
                    await self.schedule(self.ready.popleft(), checkpoints)
                if not self.running:
                    break
                nid = await self.finished.get()
                if nid is None:
                    self.stop(RunState.CANCELLED, self.token.reason, interrupt=True)
                    continue
                await self.collect(nid)
        except asyncio.CancelledError:
            # The runner itself was cancelled (not through the token): stop the nodes.
            for entry in self.running.values():
                if entry.task is not None:
                    entry.task.cancel()
            await asyncio.gather(
                *(e.task for e in self.running.values() if e.task), return_exceptions=True
            )
            raise
        state = self.final_state or RunState.SUCCEEDED
        ended = _now()
        for result in self.results.values():
            if result.state is NodeState.PENDING:
                result.state = NodeState.CANCELLED
        outcome = RunResult(
            self.tenant_id,
            self.run_id,
            self.run_attempt,
            state,
            self.error,
            started,
            ended,
            {n: dataclasses.replace(r) for n, r in self.results.items()},
            dict(self.outputs),
        )
        await self.runner.hooks.run_complete(outcome)
        return outcome

    async def schedule(self, nid: str, checkpoints: Mapping[str, Any]) -> None:
        node = self.plan.nodes[nid]
        result = self.results[nid]
        key = cache_key(
            node.spec.type,
            node.version,
            node.config_digest,
            [(dep, self.digests[dep]) for dep in node.spec.depends_on],
        )
        checkpoint = checkpoints.get(nid)
        if checkpoint is not None and checkpoint.cache_key == key:
            result.state, result.cache_key = NodeState.SKIPPED, key
            result.output_digest = checkpoint.output_digest
            result.started_at = result.ended_at = _now()
            self.outputs[nid] = checkpoint.output
            self.digests[nid] = checkpoint.output_digest
            await self.emit(EventType.NODE_SKIPPED, nid, checkpoint.output)
            self.release(nid)
            return
        result.state, result.started_at = NodeState.RUNNING, _now()
        await self.emit(EventType.NODE_STARTED, nid)
        entry = _Running(key)
        inputs = {dep: self.outputs[dep] for dep in node.spec.depends_on}
        entry.task = asyncio.create_task(self.observed(node, inputs, key, entry))
        entry.task.add_done_callback(lambda _task: self.finished.put_nowait(nid))
        self.running[nid] = entry

    async def collect(self, nid: str) -> None:
        entry = self.running.pop(nid)
        result = self.results[nid]
        result.ended_at = _now()
        result.attempts = entry.attempts
        assert entry.task is not None
        if entry.task.cancelled():
            # Interrupted by cancellation or by a sibling's failure: nothing was checkpointed.
            result.state, result.error = NodeState.CANCELLED, "interrupted"
            return
        outcome = entry.task.result()
        if outcome.ok:
            result.state, result.cache_key = NodeState.COMPLETED, entry.key
            result.output_digest = outcome.digest
            self.outputs[nid], self.digests[nid] = outcome.output, outcome.digest
            await self.emit(EventType.NODE_COMPLETED, nid, outcome.output)
            self.release(nid)
            return
        result.state, result.error = NodeState.FAILED, outcome.error
        await self.emit(EventType.NODE_FAILED, nid)
        interrupt = self.plan.definition.on_failure is FailureMode.CANCEL_RUNNING
        self.stop(RunState.FAILED, f"node '{nid}' failed: {outcome.error}", interrupt=interrupt)

    async def observed(
        self, node: PlannedNode, inputs: Mapping[str, Any], key: str, entry: _Running
    ) -> _Outcome:
        """`execute` with its duration by node type, in a span under the call that
        started the run (the task copies its context)."""
        began = time.perf_counter()
        outcome = "cancelled"
        with tracing.span("flow.node", attributes={"flow.node.type": node.spec.type}):
            try:
                result = await self.execute(node, inputs, key, entry)
                outcome = "completed" if result.ok else "failed"
                return result
            finally:
                metrics.FLOW_NODE.labels(node.spec.type, outcome).observe(
                    time.perf_counter() - began
                )

    async def execute(
        self, node: PlannedNode, inputs: Mapping[str, Any], key: str, entry: _Running
    ) -> _Outcome:
        policy = node.spec.retry
        while True:
            entry.attempts += 1
            writer = self.store.writer(self.tenant_id, self.run_id, node.id)
            ctx = NodeContext(
                self.tenant_id,
                self.run_id,
                node.id,
                entry.attempts,
                self.run_attempt,
                self.runner.services,
                writer,
                self.actor,
            )
            try:
                try:
                    async with asyncio.timeout(node.timeout_seconds):
                        output = await node.impl.run(ctx, node.config, inputs)
                    digest = output_digest(output)
                except BaseException:
                    await writer.abort()
                    raise
                entry.committing = True
                committing = time.perf_counter()
                await writer.commit(key, output, digest)
                metrics.FLOW_CHECKPOINT.observe(time.perf_counter() - committing)
                return _Outcome(True, entry.attempts, output, digest)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                entry.committing = False
                error, retryable = describe_failure(exc, node.timeout_seconds)
            if not retryable or entry.attempts >= policy.max_attempts:
                return _Outcome(False, entry.attempts, error=error)
            await asyncio.sleep(policy.backoff(entry.attempts))
