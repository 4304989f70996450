"""The gRPC health service, following database reachability."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from grpc_health.v1 import _async as health_async
from grpc_health.v1 import health_pb2

from kaireon_server.platform.db import Database
from kaireon_server.platform.tasks import cancel_and_wait

log = logging.getLogger(__name__)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

# Liveness, apart from readiness: SERVING from start until shutdown whatever the
# database says, so an orchestrator's liveness probe does not restart every
# replica while PostgreSQL is down or failing over (deploy/kubernetes/).
LIVENESS_SERVICE = "liveness"


class HealthMonitor:
    """Polls the database and flips every service (and "") between SERVING and NOT_SERVING."""

    def __init__(self, db: Database, services: Iterable[str], interval: float) -> None:
        self.servicer = health_async.HealthServicer()
        self._db = db
        self._names = ["", *services]
        self._interval = interval
        self._task: asyncio.Task[None] | None = None
        self._serving: bool | None = None
        self._shutting_down = False

    @property
    def serving(self) -> bool:
        """SERVING as last reported (False before the first check and in shutdown)."""
        return bool(self._serving) and not self._shutting_down

    async def _set(self, serving: bool) -> None:
        if serving == self._serving:
            return
        self._serving = serving
        for name in self._names:
            await self.servicer.set(name, SERVING if serving else NOT_SERVING)
        log.log(
            logging.INFO if serving else logging.WARNING,
            "health changed",
            extra={"serving": serving},
        )

    async def check_once(self) -> bool:
        ok = await self._db.ping(timeout=min(self._interval, 2.0))
        if not self._shutting_down:
            await self._set(ok)
        return ok

    async def start(self) -> None:
        await self.servicer.set(LIVENESS_SERVICE, SERVING)
        await self.check_once()
        self._task = asyncio.create_task(self._loop(), name="health-monitor")

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.check_once()
            except Exception as exc:  # the monitor must outlive any one failed check
                log.warning("health check failed", extra={"error_type": type(exc).__name__})
                if not self._shutting_down:
                    await self._set(False)

    async def enter_shutdown(self) -> None:
        self._shutting_down = True
        await self.servicer.enter_graceful_shutdown()
        await self.stop()

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
