"""Export workers: claim, lease, heartbeat, progress, retry with backoff, fail.

Every server process runs up to `settings.workers` exports at once. One
dispatcher claims jobs while a slot is free, so the exports running follow the
queue (none when it is empty, the bound when it is long) and a notification
costs one claim, not one per idle worker. A claim takes the oldest due request
with FOR UPDATE SKIP LOCKED and starts an attempt (attempts + 1) under a lease
the slot renews by heartbeat. A process that dies stops renewing; once the
lease has expired another process claims the request and starts over (the dead
attempt committed nothing). A failed attempt is retried after an exponential
backoff until `max_attempts`, then the request is failed with a reason. On
shutdown a slot hands its job back at once (no attempt is counted) so another
process picks it up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import time
import uuid
from typing import Any

import asyncpg

from kaireon_server.dsar import repository
from kaireon_server.dsar.jobs import WORKER_ACTOR, JobDeps, LeaseLost, PermanentFailure, run_export
from kaireon_server.dsar.model import Claim, audit_row
from kaireon_server.dsar.notify import Notifier
from kaireon_server.platform.audit_chain import append_audit_at_commit
from kaireon_server.platform.observability import metrics, tracing
from kaireon_server.platform.tasks import cancel_and_wait

log = logging.getLogger(__name__)

_PROGRESS_INTERVAL = 0.5
# An export claimed within this long after the call that queued it is traced as a
# child of that call; a later one (a long queue, retries after backoff) starts its
# own trace with a link to the call (docs/OPERATIONS.md, "Traces").
TRACE_AS_CHILD_WITHIN_SECONDS = 3600.0


def failure_reason(exc: BaseException) -> str:
    """A reason that is safe to store and show: exception type and SQLSTATE, never text."""
    sqlstate = getattr(exc, "sqlstate", None)
    return f"{type(exc).__name__} ({sqlstate})" if sqlstate else type(exc).__name__


class ExportWorkers:
    """The dispatcher: claims while a slot is free, runs each claim in its slot."""

    def __init__(self, deps: JobDeps, notifier: Notifier) -> None:
        self._settings = deps.settings
        self._wake = notifier.work_event()
        self._freed = asyncio.Event()
        self._slots = [Worker(deps, index) for index in range(deps.settings.workers)]
        self._free = list(reversed(self._slots))
        self._running: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def busy(self) -> int:
        """Exports running now: what a shutdown interrupts (logged by the app)."""
        return len(self._slots) - len(self._free)

    def start(self) -> None:
        if not self._slots:
            return
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name="dsar-dispatcher")

    async def stop(self) -> None:
        """Stop claiming, then interrupt the running exports (each hands its job back)."""
        self._stopping = True
        self._wake.set()
        await cancel_and_wait(self._task, *self._running)
        self._task = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        tick = loop.time()  # the next poll: a claim even without a notification, and the reap
        # Whether the queue may hold a due job: after a notification, a poll, or a
        # claim that found one (there may be more); not after a claim that found
        # none. A slot that frees up claims only then: otherwise every export's
        # end would cost a claim that finds nothing, in every process.
        maybe_due = True
        while not self._stopping:
            polled = loop.time() >= tick
            if polled:
                tick = loop.time() + self._settings.poll_seconds
                maybe_due = True
            try:
                while self._free and maybe_due and not self._stopping:
                    slot = self._free[-1]
                    claim = await slot.claim()
                    if claim is None:
                        maybe_due = False
                        break
                    self._free.pop()
                    task = asyncio.create_task(self._execute(slot, claim))
                    self._running.add(task)
                    task.add_done_callback(self._running.discard)
                # Dead workers' jobs wait for a lease to run out anyway: looking for
                # them once per poll is soon enough, busy or not (the reap takes
                # no slot).
                if polled:
                    await self._slots[0].reap()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # database down: wait and try again
                maybe_due = True
                log.warning(
                    "dsar worker cannot reach the queue", extra={"error": failure_reason(exc)}
                )
            if await self._wait(tick - loop.time()):
                maybe_due = True

    async def _wait(self, timeout: float) -> bool:
        """Until a notification, a slot freeing up or `timeout` seconds; True when
        notified (or stopped)."""
        if not self._wake.is_set() and not self._freed.is_set() and timeout > 0:
            waits = [asyncio.ensure_future(e.wait()) for e in (self._wake, self._freed)]
            try:
                await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiting in waits:
                    waiting.cancel()
        notified = self._wake.is_set()
        self._wake.clear()
        self._freed.clear()
        return notified

    async def _execute(self, slot: Worker, claim: Claim) -> None:
        try:
            await slot.execute(claim)
        finally:
            self._free.append(slot)
            self._freed.set()  # a slot is free: it claims if the queue may hold more


class Worker:
    """One export slot: its own lease owner; runs one claimed job at a time."""

    def __init__(self, deps: JobDeps, index: int) -> None:
        self._settings = deps.settings
        self._db = deps.db
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{index}:{uuid.uuid4().hex[:8]}"
        self._deps = JobDeps(deps.db, deps.settings, deps.signer, deps.keyring, self.owner)

    async def claim(self) -> Claim | None:
        async with self._db.single_statements() as con:
            row = await repository.claim_next(
                con,
                self.owner,
                self._settings.lease_seconds,
                self._settings.max_attempts,
                can_encrypt=self._deps.keyring is not None,
            )
        if row is None:
            return None
        origin = (
            tracing.TraceCarrier(row["trace_parent"], row["trace_state"])
            if row["trace_parent"]
            else None
        )
        return Claim(
            row["tenant_id"],
            row["id"],
            row["subject_id"],
            row["encrypt"],
            row["attempts"],
            origin=origin,
            queued_seconds=max(0.0, float(row["queued_seconds"])),
        )

    async def reap(self) -> None:
        """Fail jobs whose every attempt died with its worker."""
        async with self._db.connection() as con, con.transaction():
            row = await repository.lock_exhausted(con, self._settings.max_attempts)
            if row is None:
                return
            tenant_id = row["tenant_id"]
            reason = f"worker_lost: no attempts left after {row['attempts']}"
            if await repository.fail(con, tenant_id, row["id"], reason, lease=None):
                await _audit_failed(
                    con,
                    tenant_id,
                    row["id"],
                    row["subject_id"],
                    reason=reason,
                    attempts=row["attempts"],
                )

    async def execute(self, claim: Claim) -> None:
        progress = _Progress()
        began = time.perf_counter()
        outcome = "abandoned"
        # In the trace of the call that queued the job (its context was stored with it).
        span = tracing.job_span(
            "dsar.export",
            claim.origin,
            queued_seconds=claim.queued_seconds,
            child_within_seconds=TRACE_AS_CHILD_WITHIN_SECONDS,
            attributes={"dsar.attempt": claim.attempt},
        )
        span.__enter__()
        # Logged inside the span: the line carries its trace_id and span_id.
        log.info(
            "dsar export started",
            extra={"request_id": str(claim.request_id), "attempt": claim.attempt},
        )
        job = asyncio.create_task(run_export(self._deps, claim, progress.update))
        keeper = asyncio.create_task(self._keep_lease(claim, job, progress))
        try:
            rows = await job
            outcome = "completed"
            log.info(
                "dsar export completed", extra={"request_id": str(claim.request_id), "rows": rows}
            )
        except asyncio.CancelledError:
            me = asyncio.current_task()
            if me is not None and me.cancelling() == 0:
                # Not our cancellation: the lease keeper stopped the job.
                log.warning(
                    "dsar export abandoned: lease lost", extra={"request_id": str(claim.request_id)}
                )
                return
            job.cancel()
            with contextlib.suppress(BaseException):
                await job
            await self._hand_back(claim)
            raise
        except LeaseLost:
            log.warning(
                "dsar export abandoned: lease lost", extra={"request_id": str(claim.request_id)}
            )
        except PermanentFailure as exc:
            outcome = "failed"
            await self._give_up(claim, exc.reason)
        except Exception as exc:
            outcome = "error"
            await self._retry_or_fail(claim, failure_reason(exc))
        finally:
            span.__exit__(None, None, None)
            metrics.DSAR_ATTEMPTS.labels(outcome).inc()
            metrics.DSAR_EXPORT_DURATION.labels(outcome).observe(time.perf_counter() - began)
            keeper.cancel()
            with contextlib.suppress(BaseException):
                await keeper

    async def _keep_lease(self, claim: Claim, job: asyncio.Task[int], progress: _Progress) -> None:
        """Heartbeat and progress while the job runs; cancel the job if the lease is lost."""
        settings = self._settings
        loop = asyncio.get_running_loop()
        next_beat = loop.time() + settings.heartbeat_seconds
        written = -1
        while not job.done():
            await asyncio.sleep(min(_PROGRESS_INTERVAL, settings.heartbeat_seconds))
            try:
                async with self._db.transaction(claim.tenant_id) as con:
                    owned = True
                    if loop.time() >= next_beat:
                        owned = await repository.heartbeat(
                            con, self._lease(claim), settings.lease_seconds
                        )
                        next_beat = loop.time() + settings.heartbeat_seconds
                    percent = progress.percent
                    if owned and percent > written and not job.done():
                        await repository.set_progress(con, self._lease(claim), percent)
                        written = percent
            except Exception as exc:  # a missed beat is retried; the lease has slack
                log.warning("dsar heartbeat failed", extra={"error": failure_reason(exc)})
                continue
            if not owned:
                job.cancel()
                return

    async def _hand_back(self, claim: Claim) -> None:
        with contextlib.suppress(Exception):
            async with self._db.transaction(claim.tenant_id) as con:
                await repository.reschedule(
                    con,
                    self._lease(claim),
                    delay_seconds=0,
                    error=None,
                    refund_attempt=True,
                )

    def backoff(self, attempt: int) -> float:
        settings = self._settings
        delay = min(settings.retry_max_seconds, settings.retry_base_seconds * 2 ** (attempt - 1))
        return float(delay * random.uniform(0.8, 1.2))  # noqa: S311 - jitter, not cryptography

    async def _retry_or_fail(self, claim: Claim, reason: str) -> None:
        if claim.attempt >= self._settings.max_attempts:
            await self._give_up(claim, f"gave up after {claim.attempt} attempts: {reason}")
            return
        delay = self.backoff(claim.attempt)
        log.warning(
            "dsar export attempt failed; retrying",
            extra={
                "request_id": str(claim.request_id),
                "attempt": claim.attempt,
                "error": reason,
                "retry_in": round(delay, 2),
            },
        )
        async with self._db.transaction(claim.tenant_id) as con:
            await repository.reschedule(
                con,
                self._lease(claim),
                delay_seconds=delay,
                error=f"retrying: {reason}",
            )

    async def _give_up(self, claim: Claim, reason: str) -> None:
        log.warning(
            "dsar export failed", extra={"request_id": str(claim.request_id), "error": reason}
        )
        async with self._db.transaction(claim.tenant_id) as con:
            if await repository.fail(
                con, claim.tenant_id, claim.request_id, reason, lease=self._lease(claim)
            ):
                await _audit_failed(
                    con,
                    claim.tenant_id,
                    claim.request_id,
                    claim.subject_id,
                    reason=reason,
                    attempts=claim.attempt,
                )

    def _lease(self, claim: Claim) -> repository.Lease:
        return repository.Lease(claim.tenant_id, claim.request_id, self.owner, claim.attempt)


async def _audit_failed(
    con: asyncpg.Connection,
    tenant_id: str,
    request_id: Any,
    subject_id: str,
    *,
    reason: str,
    attempts: int,
) -> None:
    await append_audit_at_commit(
        con,
        tenant_id,
        audit_row(
            "dsar_export_failed",
            request_id,
            subject_id,
            WORKER_ACTOR,
            {"reason": reason, "attempts": attempts},
        ),
    )


class _Progress:
    """Latest progress of a running job, in percent; completion alone reports 100."""

    def __init__(self) -> None:
        self.percent = 0

    def update(self, done: int, total: int) -> None:
        if total > 0:
            self.percent = min(99, done * 100 // total)
