"""Samples the gauges that live in the database (DSAR queue, flow runs, audit
checkpoint lag, overdue lifecycle requests) every KAIREON_METRICS_SAMPLE_SECONDS,
through one aggregate-only function (migrations 0120, 0171, 0222)."""

from __future__ import annotations

import asyncio
import logging

from kaireon_server.platform.db.database import Database
from kaireon_server.platform.observability import metrics
from kaireon_server.platform.observability.metrics import MetricsSettings
from kaireon_server.platform.tasks import cancel_and_wait

log = logging.getLogger(__name__)


async def sample_once(db: Database, settings: MetricsSettings) -> None:
    async with db.connection() as con:
        rows = await con.fetch(
            "SELECT kind, state, n, age_seconds FROM kaireon_metrics_sample($1, $2)",
            settings.dsar_due_days * 86400.0,
            settings.flow_stuck_seconds,
        )
    dsar = dict.fromkeys(metrics.DSAR_STATES, 0)
    flow = dict.fromkeys(metrics.FLOW_STATES, 0)
    oldest = 0.0
    overdue = stuck = 0
    unchecked_age = 0.0
    requests_overdue, requests_late = 0, 0.0
    for row in rows:
        kind, state, count = row["kind"], row["state"], int(row["n"])
        if kind == "dsar" and state in dsar:
            dsar[state] = count
            if state in ("pending", "processing"):
                oldest = max(oldest, float(row["age_seconds"]))
        elif kind == "flow" and state in flow:
            flow[state] = count
        elif kind == "dsar_overdue":
            overdue = count
        elif kind == "flow_stuck":
            stuck = count
        elif kind == "audit_unchecked":
            unchecked_age = max(0.0, float(row["age_seconds"]))
        elif kind == "requests_overdue":
            requests_overdue = count
            requests_late = max(0.0, float(row["age_seconds"])) if count else 0.0
    for state, count in dsar.items():
        metrics.DSAR_QUEUE.labels(state).set(count)
    for state, count in flow.items():
        metrics.FLOW_RUNS.labels(state).set(count)
    metrics.DSAR_OLDEST_PENDING.set(oldest)
    metrics.DSAR_OVERDUE.set(overdue)
    metrics.FLOW_RUNS_STUCK.set(stuck)
    metrics.AUDIT_CHECKPOINT_LAG.set(unchecked_age)
    metrics.REQUESTS_OVERDUE.set(requests_overdue)
    metrics.REQUESTS_OVERDUE_SECONDS.set(requests_late)


class Sampler:
    def __init__(self, db: Database, settings: MetricsSettings) -> None:
        self._db = db
        self._settings = settings
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="kaireon-metrics-sampler")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await sample_once(self._db, self._settings)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database is down: health says so; try again
                log.warning("metrics sample failed", extra={"error_type": type(exc).__name__})
            await asyncio.sleep(self._settings.sample_seconds)
