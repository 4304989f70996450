"""The embedded PostgreSQL (PyPI `pgserver`): a real server from a wheel, for machines without one.

Several processes may share one data directory: pgserver counts handles and
stops the server when the last one is released.
"""

from __future__ import annotations

import asyncio
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

log = logging.getLogger(__name__)

DATABASE_NAME = "kaireon"


@dataclass
class EmbeddedPostgres:
    data_dir: Path
    _server: Any = None

    async def start(self) -> str:
        """Start (or attach to) the server; return a DSN for the `kaireon` database."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._server = await asyncio.to_thread(_get_server, self.data_dir.resolve() / "pgdata")
        await asyncio.to_thread(_ensure_database, self._server)
        uri = str(self._server.get_uri(DATABASE_NAME))
        log.info("embedded postgresql ready", extra={"data_dir": str(self.data_dir)})
        return uri

    async def stop(self) -> None:
        if self._server is not None:
            server, self._server = self._server, None
            await asyncio.to_thread(server.cleanup)


def _get_server(pgdata: Path) -> Any:
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); harmless.
        warnings.simplefilter("ignore")
        import pgserver  # imported lazily: only the embedded mode needs it

        return pgserver.get_server(pgdata, cleanup_mode="stop")  # type: ignore[attr-defined]


def _ensure_database(server: Any) -> None:
    # DATABASE_NAME is a constant identifier, not input.
    exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE_NAME}';")  # noqa: S608
    if "(1 row)" not in exists:
        server.psql(f"CREATE DATABASE {DATABASE_NAME};")


def socket_dir_of(dsn: str) -> str | None:
    """The unix-socket directory of a `postgresql://…?host=/dir` DSN, if any."""
    hosts = parse_qs(urlparse(dsn).query).get("host")
    return hosts[0] if hosts else None
