"""WatchRun: a snapshot, then the run's events from its event log until it finishes
(the run_finished event ends every stream: a run finished before the watch
began sends its snapshot and then that event).

The snapshot and the position in the log are read in one repeatable-read
transaction, so no event is missed or repeated between them. Afterwards the
stream reads the log whenever a NOTIFY wakes it, and at least every
POLL_SECONDS, so it also works across replicas and through listener
reconnects: whichever process executes the run, every watcher sees its events.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import datetime

from kaireon_server.flow import repository
from kaireon_server.flow.hooks import NodeState
from kaireon_server.flow.notifier import FlowNotifier
from kaireon_server.flow.repository import NodeView, RunView
from kaireon_server.platform.canonical import parse_timestamp
from kaireon_server.platform.db import Database
from kaireon_server.platform.errors import NotFound

POLL_SECONDS = 1.0
BATCH = 500


@dataclass(frozen=True)
class WatchItem:
    # "snapshot" or an event type (node_started ... run_finished).
    type: str
    run: RunView
    seq: int = 0
    node: NodeView | None = None
    error: str = ""
    at: datetime | None = None


def _node(node_id: str, status: dict[str, object]) -> NodeView:
    def when(key: str) -> datetime | None:
        value = status.get(key)
        if not isinstance(value, str):
            return None
        try:
            # The recorder writes isoformat() of aware times: the C parser reads it.
            moment = datetime.fromisoformat(value)
        except ValueError:
            return parse_timestamp(value)
        return moment if moment.tzinfo is not None else parse_timestamp(value)

    attempts = status.get("attempts", 0)
    return NodeView(
        node_id=node_id,
        node_type=str(status.get("type", "")),
        state=NodeState(str(status.get("state", "pending"))),
        attempts=attempts if isinstance(attempts, int) else 0,
        error=str(status.get("error", "")),
        cache_key=str(status.get("cacheKey", "")),
        output_digest=str(status.get("outputDigest", "")),
        started_at=when("startTime"),
        ended_at=when("endTime"),
    )


async def watch_run(
    db: Database, notifier: FlowNotifier, tenant_id: str, run_id: str
) -> AsyncIterator[WatchItem]:
    with notifier.subscribe(tenant_id, run_id) as changed:
        async with db.transaction(tenant_id, readonly=True, isolation="repeatable_read") as con:
            view = await repository.get_run(con, tenant_id, run_id)
            if view is None:
                raise NotFound(f"run '{run_id}' not found", reason="RUN_NOT_FOUND")
            # A finished run's stream ends as a live one does, with its run_finished
            # event (the last one written): a client waits for RUN_FINISHED either way.
            if view.state.finished:
                end = await repository.last_event(con, tenant_id, run_id)
            else:
                last = await repository.next_seq(con, tenant_id, run_id) - 1
        yield WatchItem("snapshot", view, at=view.started_at or view.created_at)
        if view.state.finished:
            if end is not None and end.type == "run_finished":
                yield WatchItem("run_finished", view, end.seq, error=end.error, at=end.created_at)
            return
        # Node events carry run-level fields only: not the definition, not every node.
        header = replace(view, nodes=(), definition={})
        while True:
            changed.clear()
            async with db.transaction(tenant_id, readonly=True) as con:
                events = await repository.events_after(con, tenant_id, run_id, last, BATCH)
            for event in events:
                last = event.seq
                if event.type == "run_finished":
                    final = await _final_view(db, tenant_id, run_id)
                    yield WatchItem(
                        event.type, final, event.seq, error=event.error, at=event.created_at
                    )
                    return
                node = _node(event.node_id, dict(event.status))
                yield WatchItem(event.type, header, event.seq, node, event.error, event.created_at)
            if len(events) == BATCH:
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(POLL_SECONDS):
                    await changed.wait()


async def _final_view(db: Database, tenant_id: str, run_id: str) -> RunView:
    async with db.transaction(tenant_id, readonly=True) as con:
        view = await repository.get_run(con, tenant_id, run_id)
    if view is None:
        raise NotFound(f"run '{run_id}' not found", reason="RUN_NOT_FOUND")
    return view
