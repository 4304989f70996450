"""Multi-process serving (KAIREON_WORKERS=N): N server processes share the ports.

The supervisor starts the embedded PostgreSQL once (when DATABASE_URL is unset)
and applies migrations once, then runs N `kaireon-server` children with the
same DATABASE_URL. Each child binds the gRPC and REST ports with SO_REUSEPORT,
so the kernel spreads connections over them, and runs its own pool and
background workers; PostgreSQL is the only coordination point. A child that
dies is restarted (with backoff); SIGTERM/SIGINT are forwarded and the
supervisor exits 0 once every child has drained.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import signal
import sys
import tempfile
from dataclasses import dataclass, field

from kaireon_server.platform.config import Settings
from kaireon_server.platform.db import connect_database
from kaireon_server.platform.env import process_environment
from kaireon_server.platform.errors import ConfigurationError
from kaireon_server.platform.observability import metrics

log = logging.getLogger(__name__)


@dataclass
class _Child:
    index: int
    process: asyncio.subprocess.Process | None = None
    restarts: int = 0
    exit_codes: list[int] = field(default_factory=list)


async def supervise(settings: Settings, *, demo: bool) -> int:
    if settings.grpc_port == 0:
        raise ConfigurationError("KAIREON_WORKERS > 1 needs a fixed KAIREON_GRPC_PORT")
    # Signals first: a SIGTERM while the embedded PostgreSQL starts must still stop it.
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    # One database for all children: start it (embedded) and migrate it here.
    db = await connect_database(settings)
    try:
        if demo:
            from kaireon_server.demo.seed import seed_if_empty

            await seed_if_empty(db)
    except BaseException:
        await db.close()
        raise
    if stopping.is_set():
        await db.close()
        return 0
    env = {
        **process_environment(),
        "DATABASE_URL": db.dsn,
        "KAIREON_WORKERS": "1",
        "KAIREON_TRUST_HEADERS": "true" if settings.trust_headers else "false",
    }
    # Metrics: the children record into one directory (prometheus_client's
    # multi-process mode); this process serves their sum on KAIREON_METRICS_PORT.
    metrics_settings = metrics.MetricsSettings(settings.env)
    metrics_dir: str | None = None
    metrics_server: metrics.MetricsServer | None = None
    if metrics_settings.enabled:
        metrics_dir = tempfile.mkdtemp(prefix="kaireon-metrics-")
        env[metrics.MULTIPROC_ENV] = metrics_dir
        metrics_server = metrics.serve_metrics(metrics_settings, multiprocess_dir=metrics_dir)

    async def run_child(child: _Child) -> None:
        backoff = 0.5
        while not stopping.is_set():
            child.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "kaireon_server",
                env={**env, "KAIREON_WORKER_INDEX": str(child.index)},
            )
            code = await child.process.wait()
            child.exit_codes.append(code)
            if metrics_dir is not None:
                metrics.mark_process_dead(child.process.pid, metrics_dir)
            if stopping.is_set():
                return
            child.restarts += 1
            log.error("worker exited; restarting", extra={"worker": child.index, "code": code})
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)

    children = [_Child(i) for i in range(settings.workers)]
    tasks = [asyncio.create_task(run_child(c)) for c in children]
    log.info("supervising", extra={"workers": settings.workers, "grpc_port": settings.grpc_port})
    try:
        await stopping.wait()
    finally:
        for child in children:
            if child.process is not None and child.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    child.process.send_signal(signal.SIGTERM)
        await asyncio.gather(*tasks, return_exceptions=True)
        await db.close()
        if metrics_server is not None:
            metrics_server.close()
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    failed = [c.exit_codes[-1] for c in children if c.exit_codes and c.exit_codes[-1] != 0]
    log.info("supervisor stopped", extra={"failed_workers": len(failed)})
    return 0 if not failed else 1
