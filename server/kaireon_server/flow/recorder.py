"""Persists a run's events and node status as they happen, for GetRun and WatchRun.

The recorder is a RunHooks: hooks only queue (numbering the event), and one
writer task flushes whatever accumulated: the events, the latest status of
each touched node, one NOTIFY. A flush waits FLUSH_SECONDS after the first
queued event so that fast nodes share it: watchers and GetRun lag by at most
that much, and the database cost per node stays small. A flush is one
statement on a pooled connection, which sets the tenant itself
(repository.write_batch: the batch travels as one JSON document). The end of
a run is written by the executor (`finalize`): `close` stops the writer and
leaves what it had not flushed (a short run's every event) as the tail, which
the statement ending the run writes too; the end rewrites only the nodes
whose final status neither a flush nor the tail holds (`unwritten`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kaireon_server.flow import repository
from kaireon_server.flow.hooks import NodeEvent, NodeResult, RunHooks
from kaireon_server.flow.notifier import CHANNEL, payload
from kaireon_server.platform.db import Database

log = logging.getLogger(__name__)

FLUSH_SECONDS = 0.025


@dataclass(frozen=True)
class _Pending:
    seq: int
    type: str
    node_id: str
    error: str
    status: NodeResult
    at: datetime


def _event_json(item: _Pending) -> dict[str, Any]:
    return {
        "seq": item.seq,
        "type": item.type,
        "node_id": item.node_id,
        "error": item.error,
        "status": repository.status_json(item.status),
        "at": item.at.isoformat(),
    }


class RunRecorder(RunHooks):
    def __init__(
        self,
        db: Database,
        tenant_id: str,
        run_id: str,
        attempt: int,
        first_seq: int,
    ) -> None:
        self._db = db
        self.tenant_id = tenant_id
        self.run_id = run_id
        self.attempt = attempt
        self.next_seq = first_seq
        self._pending: list[_Pending] = []
        # Each node's status as the last successful flush wrote it.
        self._written: dict[str, NodeResult] = {}
        self._wake = asyncio.Event()
        self._closing = False
        self._writing = False
        # Queued when the writer stopped: written with the run's end (close()).
        self._tail: list[_Pending] = []
        self._task = asyncio.create_task(self._flush_forever())

    async def _queue(self, event: NodeEvent) -> None:
        self._pending.append(
            _Pending(
                self.next_seq, event.type.value, event.node_id, event.error, event.status, event.at
            )
        )
        self.next_seq += 1
        self._wake.set()

    on_node_start = _queue
    on_node_complete = _queue
    on_node_skipped = _queue
    on_node_failed = _queue

    async def close(self) -> None:
        """Stop the writer: a flush under way completes; what it has not flushed
        stays queued as the tail, for the statement that ends the run (one round
        trip for both, repository.finish_run_alone) or for `write_tail`."""
        self._closing = True
        if not self._writing:
            # Waiting for events or for fast nodes to share a flush: nothing to lose.
            self._task.cancel()
        try:
            # A failed flush was logged by _write; finalize rewrites what it missed.
            with contextlib.suppress(Exception):
                await self._task
        except asyncio.CancelledError:
            if not self._task.cancelled():
                raise  # this caller was cancelled, not the writer
        self._tail, self._pending = self._pending, []

    def tail_events(self) -> list[dict[str, Any]]:
        """The tail as write_batch's events."""
        return [_event_json(item) for item in self._tail]

    def tail_rows(
        self, attempt: int
    ) -> list[tuple[int, int, str, str, str, dict[str, Any], datetime]]:
        """The tail as insert_events' rows."""
        return [
            (item.seq, attempt, item.type, item.node_id, item.error,
             repository.status_json(item.status), item.at)
            for item in self._tail
        ]  # fmt: skip

    async def write_tail(self) -> None:
        """Flush the tail on its own (a run that ends without finish_run_alone)."""
        tail, self._tail = self._tail, []
        if tail:
            await self._write(tail)

    def unwritten(self, nodes: Iterable[NodeResult], *, with_tail: bool) -> list[NodeResult]:
        """The nodes whose status differs from what the flushes wrote (or that none
        wrote); `with_tail`: counting the tail's as written (it is written with
        the run's end)."""
        written = dict(self._written)
        if with_tail:
            written.update((item.node_id, item.status) for item in self._tail)
        return [n for n in nodes if written.get(n.node_id) != n]

    async def _flush_forever(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(FLUSH_SECONDS)
            self._wake.clear()
            batch, self._pending = self._pending, []
            if batch:
                self._writing = True
                try:
                    await self._write(batch)
                finally:
                    self._writing = False
            if self._closing:
                return

    async def _write(self, batch: list[_Pending]) -> None:
        events = [_event_json(item) for item in batch]
        try:
            # A pooled connection, not the run's own: a flush then runs beside the
            # checkpoint writes (on the run's connection it would hold them up).
            # One statement that sets the tenant itself: one round trip, no reset.
            async with self._db.single_statements() as con:
                await repository.write_batch(
                    con,
                    self.tenant_id,
                    self.run_id,
                    self.attempt,
                    events,
                    notification=(CHANNEL, payload(self.tenant_id, self.run_id, "event")),
                )
        except Exception as exc:
            # The run goes on; finalize() writes the status of every node not written.
            log.warning("flow events not recorded", extra={"error_type": type(exc).__name__})
            return
        for item in batch:
            self._written[item.node_id] = item.status
