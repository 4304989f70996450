"""Persists a run's events and node status as they happen, for GetRun and WatchRun.

The recorder is a RunHooks: hooks only queue, and one writer task flushes
whatever accumulated in a single transaction (events, the latest status of
each touched node, one NOTIFY). A flush waits FLUSH_SECONDS after the first
queued event so that fast nodes share transactions: watchers and GetRun lag
by at most that much, and the database cost per node stays small. The end
of a run is written by the manager (`finalize`), after the last flush.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import datetime

from kaireon_server.flow import repository
from kaireon_server.flow.hooks import NodeEvent, NodeResult, RunHooks
from kaireon_server.flow.notifier import CHANNEL, payload
from kaireon_server.platform.db import Database

log = logging.getLogger(__name__)

FLUSH_SECONDS = 0.025


@dataclass(frozen=True)
class _Pending:
    type: str
    node_id: str
    error: str
    status: NodeResult
    at: datetime


class RunRecorder(RunHooks):
    def __init__(
        self, db: Database, tenant_id: str, run_id: str, attempt: int, first_seq: int
    ) -> None:
        self._db = db
        self.tenant_id = tenant_id
        self.run_id = run_id
        self.attempt = attempt
        self.next_seq = first_seq
        self._pending: list[_Pending] = []
        self._wake = asyncio.Event()
        self._closing = False
        self._task = asyncio.create_task(self._flush_forever())

    async def _queue(self, event: NodeEvent) -> None:
        self._pending.append(
            _Pending(event.type.value, event.node_id, event.error, event.status, event.at)
        )
        self._wake.set()

    on_node_start = _queue
    on_node_complete = _queue
    on_node_skipped = _queue
    on_node_failed = _queue

    async def close(self) -> None:
        """Flush what is queued and stop the writer."""
        self._closing = True
        self._wake.set()
        with contextlib.suppress(Exception):
            await self._task

    async def _flush_forever(self) -> None:
        while True:
            await self._wake.wait()
            if not self._closing:
                await asyncio.sleep(FLUSH_SECONDS)
            self._wake.clear()
            batch, self._pending = self._pending, []
            if batch:
                await self._write(batch)
            if self._closing and not self._pending:
                return

    async def _write(self, batch: list[_Pending]) -> None:
        events = []
        for item in batch:
            events.append(
                (
                    self.next_seq,
                    self.attempt,
                    item.type,
                    item.node_id,
                    item.error,
                    repository.status_json(item.status),
                    item.at,
                )
            )
            self.next_seq += 1
        latest = {item.node_id: item.status for item in batch}
        try:
            async with self._db.transaction(self.tenant_id) as con:
                await repository.insert_events(con, self.tenant_id, self.run_id, events)
                await repository.update_nodes(
                    con, self.tenant_id, self.run_id, self.attempt, latest.values()
                )
                # Status and events are informational (checkpoints are the
                # truth): the commit need not wait for the disk.
                await con.execute(
                    "SELECT set_config('synchronous_commit', 'off', true), pg_notify($1, $2)",
                    CHANNEL,
                    payload(self.tenant_id, self.run_id, "event"),
                )
        except Exception as exc:
            # The run goes on; finalize() writes every node's final status anyway.
            log.warning("flow events not recorded", extra={"error_type": type(exc).__name__})
