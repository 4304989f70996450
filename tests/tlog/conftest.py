"""Fixtures of the server-side tlog tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from kaireon_server.app import App
from kaireon_server.audit.tlog import TlogSettings
from kaireon_server.platform.config import Settings
from tests.support.keys import log_key_pem
from tests.support.pg import create_database, drop_database
from tests.support.server import base_env


@pytest.fixture(scope="module")
async def quiet_app(pg_admin_dsn: str) -> AsyncIterator[tuple[App, TlogSettings]]:
    """A server with a log key on its own database whose integrator is off: the
    test drives one (`Integrator(app.db, settings)`)."""
    dsn = await create_database(pg_admin_dsn, prefix="kaireon_tlog_quiet")
    env = base_env(dsn, KAIREON_LOG_KEY=log_key_pem().decode(), KAIREON_TLOG_INTEGRATOR="false")
    application = App(Settings.from_env(env))
    await application.start()
    yield application, TlogSettings.from_env(env)
    await application.stop(grace=1)
    await drop_database(pg_admin_dsn, dsn)
