"""Run lifecycle for the service: start, retry, cancel, clear, and the executors.

Every state change takes the run's advisory lock first (locks.py): StartRun
and RetryRun keep it for the whole attempt, so a second start or retry of an
executing run, from any process, answers FAILED_PRECONDITION. A run left
RUNNING by a process that died holds no lock; the sweep marks it FAILED
("executor lost") and RetryRun may resume it at once.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import re
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg

from kaireon_server.flow import repository
from kaireon_server.flow.definition import FlowDefinition, definition_from_json, definition_to_json
from kaireon_server.flow.executor import CANCELLED_BY_REQUEST, Attempt, Executors
from kaireon_server.flow.hooks import RunHooks, RunState
from kaireon_server.flow.locks import RunLock
from kaireon_server.flow.nodes.base import NodeServices
from kaireon_server.flow.nodes.registry import NodeRegistry
from kaireon_server.flow.notifier import FlowNotifier, notify
from kaireon_server.flow.repository import RunView
from kaireon_server.flow.settings import FlowLimits
from kaireon_server.flow.stores import PostgresCheckpointStore
from kaireon_server.flow.validation import Plan, validate
from kaireon_server.platform.audit_chain import AuditRow, PendingAudit, append_audit_at_commit
from kaireon_server.platform.auth import Identity
from kaireon_server.platform.canonical import format_timestamp, parse_timestamp
from kaireon_server.platform.db import Database
from kaireon_server.platform.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
)
from kaireon_server.platform.lru import Lru
from kaireon_server.platform.paging import decode_token, encode_token
from kaireon_server.platform.signing import Signer
from kaireon_server.platform.tasks import cancel_and_wait

log = logging.getLogger(__name__)

RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")
# Validated plans kept by tenant and definition digest, weighed by canonical
# size: a flow started again and again is validated once (about a tenth of
# StartRun's CPU).
PLAN_CACHE_BYTES = 2 * 1024 * 1024


def validate_run_id(run_id: str) -> str:
    if not RUN_ID.fullmatch(run_id):
        raise InvalidArgument.field(
            "run_id", "1 to 128 characters of A-Z, a-z, 0-9, '_', '.', ':', '-' (not first)"
        )
    return run_id


def _run_audit_row(
    identity: Identity, run_id: str, action: str, changes: Mapping[str, Any]
) -> AuditRow:
    """The audit row of an operator's action on a run."""
    return AuditRow(
        action=action,
        entity_type="flow_run",
        entity_id=run_id,
        actor=identity.actor,
        changes=changes,
    )


async def _audit_run(
    con: asyncpg.Connection,
    identity: Identity,
    run_id: str,
    action: str,
    changes: Mapping[str, Any],
) -> None:
    """`_run_audit_row`, chained when the caller's transaction commits (no lock on
    the tenant's chain across its round trips)."""
    await append_audit_at_commit(
        con, identity.tenant_id, _run_audit_row(identity, run_id, action, changes)
    )


class RunManager:
    def __init__(
        self,
        db: Database,
        registry: NodeRegistry,
        notifier: FlowNotifier,
        *,
        limits: FlowLimits,
        env: Mapping[str, str],
        hooks: Sequence[RunHooks] = (),
        signer: Signer | None = None,
    ) -> None:
        self.db = db
        self.registry = registry
        self.notifier = notifier
        self.limits = limits
        self.env = env
        self.hooks = list(hooks)
        self.store = PostgresCheckpointStore(db, synchronous=limits.checkpoint_sync_commit)
        services = NodeServices(db=db, env=env, signer=signer)
        self.executors = Executors(db, self.store, services, hooks)
        self._sweeper: asyncio.Task[None] | None = None
        self._plans: Lru[tuple[str, str], Plan] = Lru(
            PLAN_CACHE_BYTES, lambda _key, plan: len(plan.definition.canonical) + 1024
        )
        # Runs admitted but not launched yet (locking, inserting): they count
        # against max_runs too, or a burst of StartRun calls would all pass the
        # check before the first one launches, each opening a connection.
        self._starting: collections.Counter[str] = collections.Counter()
        notifier.on_cancel(self.executors.cancel_local)

    def plan(
        self, definition: FlowDefinition, identity: Identity, path: str = "definition"
    ) -> Plan:
        """Validate, then check the caller may run every node type in it.

        A plan depends on the definition and this process's fixed registry,
        limits and environment only, so it is kept; the role check is per call.
        The cached plan's definition must equal this one (not only its digest:
        the JSON form maps a timeout of None and 0 alike). Per tenant, as the
        service's converted definitions are (no timing oracle across tenants)."""
        key = (identity.tenant_id, definition.digest)
        plan = self._plans.get(key)
        if plan is None or plan.definition != definition:
            plan = validate(definition, self.registry, limits=self.limits, env=self.env, path=path)
            self._plans.put(key, plan)
        needed = max(node.impl.min_role for node in plan.nodes.values())
        if identity.role < needed:
            types = sorted(
                {n.spec.type for n in plan.nodes.values() if n.impl.min_role > identity.role}
            )
            raise PermissionDenied(
                f"node types {', '.join(types)} need role {needed.name.lower()}",
                reason="INSUFFICIENT_ROLE",
                metadata={"required_role": needed.name.lower()},
            )
        return plan

    # --- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep_forever())

    async def stop(self) -> None:
        if self._sweeper is not None:
            await cancel_and_wait(self._sweeper)
        await self.executors.stop()

    async def _sweep_forever(self) -> None:
        while True:
            try:
                await self.executors.sweep()
                await self.purge_expired_checkpoints()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("flow sweep failed", extra={"error_type": type(exc).__name__})
            await asyncio.sleep(self.limits.sweep_seconds)

    async def purge_expired_checkpoints(self) -> int:
        if not self.limits.checkpoint_retention_hours:
            return 0
        async with self.db.connection() as con:
            return await repository.purge_checkpoints(con, self.limits.checkpoint_retention_hours)

    # --- use cases ---------------------------------------------------------------

    async def _lock(self, tenant_id: str, run_id: str) -> RunLock:
        """Admits one more run (or refuses at once) and takes its lock; the caller
        then either `_launch`es the attempt or `_abandon`s the lock."""
        self._admit(tenant_id)
        self._starting[tenant_id] += 1
        try:
            lock = await RunLock.try_acquire(self.db, tenant_id, run_id)
        except BaseException:
            self._starting[tenant_id] -= 1
            raise
        if lock is None:
            self._starting[tenant_id] -= 1
            raise FailedPrecondition(
                f"run '{run_id}' is executing", reason="RUN_EXECUTING", metadata={"run_id": run_id}
            )
        return lock

    def _admit(self, tenant_id: str) -> None:
        """Refuses at once beyond max_runs per process or tenant_max_runs per tenant
        (its fair share: another tenant's start still finds a slot)."""
        retry = self.limits.retry_after_seconds
        if len(self.executors.active) + self._starting.total() >= self.limits.max_runs:
            raise ResourceExhausted(
                "this server executes its maximum number of runs; retry later",
                reason="FLOW_RUNS_EXHAUSTED",
                retry_after=retry,
            )
        mine = sum(1 for tenant, _run in self.executors.active if tenant == tenant_id)
        if mine + self._starting[tenant_id] >= self.limits.tenant_max_runs:
            raise ResourceExhausted(
                "this tenant executes its share of the server's runs; retry later",
                reason="FLOW_TENANT_RUNS_EXHAUSTED",
                retry_after=retry,
            )

    def _launch(self, attempt: Attempt) -> None:
        self._starting[attempt.tenant] -= 1
        self.executors.launch(attempt)

    async def _abandon(self, lock: RunLock, tenant_id: str) -> None:
        self._starting[tenant_id] -= 1
        await lock.release()

    async def start_run(
        self, identity: Identity, definition: FlowDefinition, run_id: str
    ) -> RunView:
        plan = self.plan(definition, identity)
        run_id = validate_run_id(run_id or uuid.uuid4().hex)
        tenant = identity.tenant_id
        lock = await self._lock(tenant, run_id)
        try:
            started = datetime.now(UTC)
            audit = PendingAudit.of(
                tenant,
                [
                    _run_audit_row(
                        identity,
                        run_id,
                        "flow_run_start",
                        {
                            "attempt": 1,
                            "nodeCount": len(plan.nodes),
                            "definitionDigest": definition.digest,
                        },
                    )
                ],
            )
            # On the lock's connection (its session has the tenant), one statement:
            # the run, its nodes and its audit row (a pooled transaction would add
            # BEGIN, its tenant statement, COMMIT, the acquire and the reset).
            async with lock.shared.mutex:
                view = await repository.insert_run(
                    lock.con,
                    tenant,
                    run_id,
                    name=definition.name,
                    definition=definition_to_json(definition),
                    digest=definition.digest,
                    nodes=_node_rows(plan),
                    started_at=started,
                    audit=audit,
                )
            if view is None:
                raise AlreadyExists(
                    f"run '{run_id}' exists; use RetryRun",
                    reason="RUN_EXISTS",
                    metadata={"run_id": run_id},
                )
        except BaseException:
            await self._abandon(lock, tenant)
            raise
        self._launch(Attempt(tenant, run_id, plan, 1, 1, lock, identity.actor))
        return view

    async def retry_run(
        self, identity: Identity, run_id: str, definition: FlowDefinition | None
    ) -> RunView:
        plan = self.plan(definition, identity) if definition is not None else None
        tenant = identity.tenant_id
        await self.get(tenant, run_id)
        lock = await self._lock(tenant, run_id)
        try:
            async with self.db.transaction(tenant) as con:
                run = await repository.get_run(con, tenant, run_id, for_update=True)
                assert run is not None
                if definition is None:
                    definition = definition_from_json(run.definition)
                    try:
                        plan = self.plan(definition, identity)
                    except InvalidArgument as exc:
                        raise FailedPrecondition(
                            f"the stored definition no longer validates: {exc.message}",
                            reason="STORED_DEFINITION_INVALID",
                            violations=exc.violations,
                        ) from None
                assert plan is not None
                attempt = run.attempt + 1
                await repository.begin_attempt(
                    con,
                    tenant,
                    run_id,
                    attempt=attempt,
                    name=definition.name,
                    definition=definition_to_json(definition),
                    digest=definition.digest,
                    nodes=_node_rows(plan),
                    started_at=datetime.now(UTC),
                )
                first_seq = await repository.next_seq(con, tenant, run_id)
                await _audit_run(
                    con,
                    identity,
                    run_id,
                    "flow_run_retry",
                    {
                        "attempt": attempt,
                        "previousState": run.state.value,
                        "definitionDigest": definition.digest,
                        "definitionChanged": definition.digest != run.definition_digest,
                    },
                )
                view = await repository.get_run(con, tenant, run_id)
        except BaseException:
            await self._abandon(lock, tenant)
            raise
        assert view is not None
        self._launch(Attempt(tenant, run_id, plan, attempt, first_seq, lock, identity.actor))
        return view

    async def cancel_run(self, identity: Identity, run_id: str, *, wait: float = 5.0) -> RunView:
        tenant = identity.tenant_id
        with self.notifier.subscribe(tenant, run_id) as changed:
            async with self.db.transaction(tenant) as con:
                run = await repository.get_run(con, tenant, run_id, for_update=True)
                if run is None:
                    raise NotFound(f"run '{run_id}' not found", reason="RUN_NOT_FOUND")
                if run.state.finished:
                    raise FailedPrecondition(
                        f"run '{run_id}' is not running (state {run.state.value})",
                        reason="RUN_NOT_RUNNING",
                    )
                await repository.request_cancel(con, tenant, run_id)
                await notify(con, tenant, run_id, "cancel")
                await _audit_run(
                    con,
                    identity,
                    run_id,
                    "flow_run_cancel",
                    {"attempt": run.attempt},
                )
            executing = self.executors.task(tenant, run_id)
            if not self.executors.cancel_local(tenant, run_id):
                await self.executors.end_if_orphaned(
                    tenant, run_id, RunState.CANCELLED, CANCELLED_BY_REQUEST
                )
            # Answer with the outcome when it comes quickly (it usually does).
            deadline = asyncio.get_running_loop().time() + wait
            if executing is not None:
                # Executed here: its task's end, not only the run's row, so the
                # run's slot is free when the caller hears it was cancelled (a
                # StartRun right after must not meet its share still taken).
                await asyncio.wait({executing}, timeout=wait)
            while True:
                view = await self.get(tenant, run_id)
                remaining = deadline - asyncio.get_running_loop().time()
                if view.state.finished or remaining <= 0:
                    return view
                changed.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(remaining, 0.5)):
                        await changed.wait()

    async def clear_checkpoints(self, identity: Identity, run_id: str) -> int:
        tenant = identity.tenant_id
        await self.get(tenant, run_id)
        lock = await RunLock.try_acquire(self.db, tenant, run_id)
        if lock is None:
            raise FailedPrecondition(f"run '{run_id}' is executing", reason="RUN_EXECUTING")
        try:
            async with self.db.transaction(tenant) as con:
                cleared = await self.store.clear(tenant, run_id, con)
                await repository.clear_cache_keys(con, tenant, run_id)
                await _audit_run(
                    con,
                    identity,
                    run_id,
                    "flow_run_clear_checkpoints",
                    {"cleared": cleared},
                )
        finally:
            await lock.release()
        return cleared

    async def get(self, tenant_id: str, run_id: str) -> RunView:
        async with self.db.transaction(tenant_id, readonly=True) as con:
            view = await repository.get_run(con, tenant_id, run_id)
        if view is None:
            raise NotFound(f"run '{run_id}' not found", reason="RUN_NOT_FOUND")
        return view

    async def list_runs(
        self, tenant_id: str, *, limit: int, page_token: str, state: RunState | None
    ) -> tuple[list[RunView], str]:
        """One page of runs (newest first) and the next page's token ("" after the last)."""
        position = decode_token(page_token)
        after: tuple[datetime, str] | None = None
        if position:
            try:
                after = (parse_timestamp(str(position["c"])), str(position["r"]))
            except (KeyError, ValueError):
                raise InvalidArgument.field("page_token", "malformed page token") from None
        async with self.db.transaction(tenant_id, readonly=True) as con:
            runs = await repository.list_runs(
                con, tenant_id, limit=limit + 1, after=after, state=state
            )
        page, more = runs[:limit], len(runs) > limit
        if not more:
            return page, ""
        return page, encode_token(
            {"c": format_timestamp(page[-1].created_at), "r": page[-1].run_id}
        )


def _node_rows(plan: Plan) -> list[tuple[str, str]]:
    return [(node.id, node.spec.type) for node in plan.nodes.values()]
