"""The run attempts this process executes, and the end of attempts nobody executes.

An attempt runs in a background task holding the run's advisory lock. A
watchdog polls the cancel flag over the lock's own connection (which also
proves the lock still holds). The end of an attempt is written in one
transaction: the final status of every node the recorder has not written, the
run's state (fenced by attempt number) and a RUN_FINISHED event, then NOTIFY.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from kaireon_server.flow import repository
from kaireon_server.flow.hooks import RunHooks, RunResult, RunState
from kaireon_server.flow.locks import APPLICATION_NAME, RunLock, lock_key
from kaireon_server.flow.nodes.base import NodeServices
from kaireon_server.flow.notifier import CHANNEL, notify, payload
from kaireon_server.flow.recorder import RunRecorder
from kaireon_server.flow.runner import CancelToken, FlowRunner
from kaireon_server.flow.stores import PostgresCheckpointStore
from kaireon_server.flow.validation import Plan
from kaireon_server.platform.db import Database
from kaireon_server.platform.tasks import cancel_and_wait

log = logging.getLogger(__name__)

CANCELLED_BY_REQUEST = "cancelled by request"
# These end the attempt FAILED (retryable), not CANCELLED: nobody asked for them.
SHUTDOWN = "interrupted: the server shut down"
LOCK_LOST = "interrupted: lost the run's executor lock"
EXECUTOR_LOST = "executor lost: the process running this attempt stopped"
WATCHDOG_SECONDS = 2.0


@dataclass(frozen=True)
class Attempt:
    tenant: str
    run_id: str
    plan: Plan
    number: int
    first_seq: int
    lock: RunLock
    # Who started or retried the run (audit rows written by nodes name them).
    actor: str = "flow"
    token: CancelToken = field(default_factory=CancelToken)


class Executors:
    def __init__(
        self,
        db: Database,
        store: PostgresCheckpointStore,
        services: NodeServices,
        hooks: Sequence[RunHooks] = (),
    ) -> None:
        self.db = db
        self.store = store
        self.services = services
        self.hooks = list(hooks)
        self.active: dict[tuple[str, str], tuple[CancelToken, asyncio.Task[None]]] = {}

    def launch(self, attempt: Attempt) -> None:
        task = asyncio.create_task(self._execute(attempt))
        self.active[(attempt.tenant, attempt.run_id)] = (attempt.token, task)

    def task(self, tenant: str, run_id: str) -> asyncio.Task[None] | None:
        """The task executing the run here, if this process executes it."""
        entry = self.active.get((tenant, run_id))
        return None if entry is None else entry[1]

    def cancel_local(self, tenant: str, run_id: str, reason: str = CANCELLED_BY_REQUEST) -> bool:
        entry = self.active.get((tenant, run_id))
        if entry is None:
            return False
        entry[0].cancel(reason)
        return True

    async def stop(self, timeout: float = 10.0) -> None:
        for token, _task in list(self.active.values()):
            token.cancel(SHUTDOWN)
        tasks = [task for _token, task in self.active.values()]
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)

    async def _execute(self, attempt: Attempt) -> None:
        tenant, run_id, token = attempt.tenant, attempt.run_id, attempt.token
        recorder = RunRecorder(self.db, tenant, run_id, attempt.number, attempt.first_seq)
        # Checkpoints of this attempt go over the lock's connection.
        store = PostgresCheckpointStore(
            self.db, synchronous=self.store.synchronous == "on", connection=attempt.lock.shared
        )
        runner = FlowRunner(store, hooks=[recorder, *self.hooks], services=self.services)
        watchdog = asyncio.create_task(self._watchdog(attempt))
        released = False
        try:
            result = await runner.run(
                attempt.plan,
                tenant_id=tenant,
                run_id=run_id,
                run_attempt=attempt.number,
                cancel=token,
                actor=attempt.actor,
                # Attempt 1 is StartRun's new run: its insert left no checkpoint
                # under its id, so there are none to read (one round trip less).
                checkpoints={} if attempt.number == 1 else None,
            )
            await recorder.close()
            released = await self._finalize(result, recorder, token.reason, attempt.lock)
        except Exception as exc:
            log.error(
                "flow run crashed", extra={"run_id": run_id, "error_type": type(exc).__name__}
            )
            await recorder.close()
            with contextlib.suppress(Exception):
                await recorder.write_tail()
            with contextlib.suppress(Exception):
                await self.end_run(
                    tenant,
                    run_id,
                    attempt.number,
                    RunState.FAILED,
                    f"internal error ({type(exc).__name__})",
                )
        finally:
            try:
                await cancel_and_wait(watchdog)
            finally:  # the lock goes back even if this task is cancelled meanwhile
                await attempt.lock.release(released=released)
                self.active.pop((tenant, run_id), None)

    async def _watchdog(self, attempt: Attempt) -> None:
        token = attempt.token
        while not token.cancelled:
            await asyncio.sleep(WATCHDOG_SECONDS)
            try:
                async with attempt.lock.shared.mutex, asyncio.timeout(WATCHDOG_SECONDS * 2):
                    flag = await attempt.lock.con.fetchval(
                        "SELECT cancel_requested FROM flow_run "
                        "WHERE tenant_id = $1 AND run_id = $2 AND attempt = $3",
                        attempt.tenant,
                        attempt.run_id,
                        attempt.number,
                    )
            except asyncio.CancelledError:
                raise
            except Exception:
                # The lock's session is gone: another process may start this run.
                token.cancel(LOCK_LOST)
                return
            if flag:
                token.cancel(CANCELLED_BY_REQUEST)

    async def _finalize(
        self, result: RunResult, recorder: RunRecorder, reason: str, lock: RunLock
    ) -> bool:
        """Write the run's end with what the recorder left: its tail (events queued
        when it stopped) and the nodes whose final status no flush wrote (never
        started, interrupted, or a flush that failed). True when the statement
        ending the run released its lock too."""
        state = RunState.FAILED if reason in (SHUTDOWN, LOCK_LOST) else result.state
        # Every node's final status in a flush or in the tail (the usual end): the
        # tail and the end in one statement; otherwise a transaction.
        alone = not recorder.unwritten(result.nodes.values(), with_tail=True)
        end = functools.partial(
            repository.finish_run_alone,
            tenant_id=result.tenant_id,
            run_id=result.run_id,
            attempt=result.run_attempt,
            state=state,
            error=result.error,
            ended_at=result.ended_at,
            seq=recorder.next_seq,
            events=recorder.tail_events(),
            notification=(CHANNEL, payload(result.tenant_id, result.run_id, "event")),
        )
        for retry in range(3):
            # First try: on the lock's connection, the statement releasing the lock
            # too. Retries go through the pool: that connection may be what failed.
            on_lock = alone and retry == 0 and not lock.con.is_closed()
            try:
                if on_lock:
                    async with lock.shared.mutex:
                        await end(lock.con, release_lock=True, timeout=self.db.command_timeout)
                    return True
                if alone:
                    async with self.db.single_statements() as con:
                        await end(con)
                else:
                    await self._end_in_transaction(result, recorder, state)
                return False
            except Exception as exc:
                log.warning(
                    "flow run end not recorded; retrying",
                    extra={"run_id": result.run_id, "error_type": type(exc).__name__},
                )
                if not on_lock:
                    await asyncio.sleep(0.5 * (retry + 1))
                # else: the lock's session, and the lock, may be gone, and a sweep
                # elsewhere may take the run for lost: the pool writes the end at once.
        return False

    async def _end_in_transaction(
        self, result: RunResult, recorder: RunRecorder, state: RunState
    ) -> None:
        """The end when some node's final status is in neither a flush nor the
        tail: the tail, those nodes, the run's state and its run_finished event."""
        tenant, run_id, number = result.tenant_id, result.run_id, result.run_attempt
        nodes = recorder.unwritten(result.nodes.values(), with_tail=False)
        async with self.db.transaction(tenant) as con:
            await repository.insert_events(con, tenant, run_id, recorder.tail_rows(number))
            await repository.update_nodes(con, tenant, run_id, number, nodes)
            if await repository.finish_run(
                con,
                tenant,
                run_id,
                attempt=number,
                state=state,
                error=result.error,
                ended_at=result.ended_at,
            ):
                finished = (
                    recorder.next_seq,
                    number,
                    "run_finished",
                    "",
                    result.error,
                    {"state": state.value},
                    result.ended_at,
                )
                await repository.insert_events(con, tenant, run_id, [finished])
                await notify(con, tenant, run_id, "event")

    async def end_run(
        self, tenant: str, run_id: str, number: int, state: RunState, error: str
    ) -> bool:
        """End attempt `number` of a run nobody executes any more (crash, orphan)."""
        ended_at = datetime.now(UTC)
        async with self.db.transaction(tenant) as con:
            if not await repository.finish_run(
                con, tenant, run_id, attempt=number, state=state, error=error, ended_at=ended_at
            ):
                return False
            await repository.cancel_unfinished_nodes(con, tenant, run_id, ended_at)
            seq = await repository.next_seq(con, tenant, run_id)
            await repository.insert_events(
                con,
                tenant,
                run_id,
                [(seq, number, "run_finished", "", error, {"state": state.value}, ended_at)],
            )
            await notify(con, tenant, run_id, "event")
        return True

    async def end_if_orphaned(self, tenant: str, run_id: str, state: RunState, error: str) -> bool:
        """End a RUNNING run whose lock nobody holds (its executor died)."""
        lock = await RunLock.try_acquire(self.db, tenant, run_id, wait=0)
        if lock is None:
            return False
        try:
            async with self.db.transaction(tenant, readonly=True) as con:
                view = await repository.get_run(con, tenant, run_id)
            if view is None or view.state is not RunState.RUNNING:
                return False
            return await self.end_run(tenant, run_id, view.attempt, state, error)
        finally:
            await lock.release()

    async def sweep(self) -> int:
        """Mark runs left RUNNING by dead processes FAILED; return how many.

        Reads running runs of every tenant (a maintenance query); each update
        then runs in that tenant's transaction while its lock is held here.
        """
        async with self.db.connection() as con:
            running = await repository.running_runs(con)
        candidates = [(t, r, a) for t, r, a in running if (t, r) not in self.active]
        if not candidates:
            return 0
        swept = 0
        con = await self.db.leased_connection(APPLICATION_NAME)
        try:
            for tenant, run_id, number in candidates:
                key = lock_key(tenant, run_id)
                if not await con.fetchval("SELECT pg_try_advisory_lock($1)", key):
                    continue
                try:
                    if await self.end_run(tenant, run_id, number, RunState.FAILED, EXECUTOR_LOST):
                        swept += 1
                finally:
                    await con.fetchval("SELECT pg_advisory_unlock($1)", key)
        finally:
            # The reset releases every lock still held if end_run raised.
            await self.db.give_back(con, APPLICATION_NAME)
        return swept
