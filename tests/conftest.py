"""Session fixtures: one real PostgreSQL, one in-process server, fresh tenant per test.

PostgreSQL is the embedded server (pgserver) unless KAIREON_TEST_DATABASE_URL
names another one (e.g. postgresql://postgres@127.0.0.1:5432/postgres); a fresh
database is created on it for the session either way. Tests isolate themselves
with a random tenant id instead of truncating tables.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

# Before grpc is imported: gRPC's fork handlers can crash a child forked by
# subprocess (pg_ctl, the CLI) while another thread is in a call — the server
# turns them off the same way (platform/env.py).
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
os.environ.setdefault("GRPC_VERBOSITY", "NONE")

import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from kaireon_server.app import App
from kaireon_server.platform import event_loop
from kaireon_server.platform.config import Settings
from kaireon_server.platform.db import Database
from tests.support.log_scan import CollectingHandler, findings, secret_fragments
from tests.support.pg import counted_database, create_database, drop_database, embedded_server
from tests.support.server import ALL_SERVER_LOGS, JWT_SECRET, base_env
from tests.support.tcp_proxy import TcpProxy

# The suite runs on the loop the server would (KAIREON_EVENT_LOOP: uvloop unless
# set); .ci/run's PostgreSQL 15 pass sets asyncio, so CI runs both loops. Through
# the policy, which pytest-asyncio's runners consult: its per-test loop-factory
# hook would parametrize the async tests only, and a sync test using an async
# fixture would then tear the session's loop (and server) down and start another.
SUITE_LOOP = event_loop.configured()
if SUITE_LOOP == "uvloop":
    import uvloop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


@pytest.fixture(scope="session", autouse=True)
def no_personal_data_in_logs(key_dir: Path) -> Iterator[None]:
    """Every log line of the whole suite — in-process and subprocess servers — is
    scanned at the end for the demo's planted PII and for key material."""
    handler = CollectingHandler()
    root = logging.getLogger()
    root.addHandler(handler)
    previous = root.level
    root.setLevel(logging.INFO)  # what production logs by default
    yield
    root.setLevel(previous)
    root.removeHandler(handler)
    lines = [*handler.lines, *(line for log in ALL_SERVER_LOGS for line in log)]
    keys = [*key_dir.glob("*.key"), *key_dir.glob("*.pem")]
    found = findings(lines, secret_fragments(keys, [JWT_SECRET]))
    assert not found, "personal data or key material in logs:\n" + "\n".join(found[:20])


@pytest.fixture(scope="session")
def pg_admin_dsn() -> Iterator[str]:
    external = os.environ.get("KAIREON_TEST_DATABASE_URL")
    if external:
        yield external
        return
    with embedded_server() as server:
        yield str(server.get_uri())


@pytest.fixture(scope="session")
async def database_url(pg_admin_dsn: str) -> AsyncIterator[str]:
    dsn = await create_database(pg_admin_dsn)
    yield dsn
    await drop_database(pg_admin_dsn, dsn)


@pytest.fixture(scope="session")
def key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("keys")


@pytest.fixture(scope="session")
def signing_key_path(key_dir: Path) -> Path:
    """A throwaway ECDSA P-256 key generated for this test session (never committed)."""
    key = ec.generate_private_key(ec.SECP256R1())
    path = key_dir / "cosign-test.key"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public = key_dir / "cosign-test.pub"
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return path


@pytest.fixture(scope="session")
def server_env(database_url: str, signing_key_path: Path) -> dict[str, str]:
    return base_env(database_url, COSIGN_KEY=str(signing_key_path))


@pytest.fixture(scope="session")
async def app(server_env: dict[str, str]) -> AsyncIterator[App]:
    application = App(Settings.from_env(server_env))
    await application.start()
    yield application
    await application.stop(grace=1)


@pytest.fixture(scope="session")
def db(app: App) -> Database:
    assert app.db is not None
    return app.db


@pytest.fixture(scope="session")
def grpc_target(app: App) -> str:
    return f"127.0.0.1:{app.grpc_port}"


@pytest.fixture(scope="session")
async def channel(grpc_target: str) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(grpc_target) as ch:
        yield ch


@pytest.fixture
async def counted_pool(
    db: Database, database_url: str, server_env: dict[str, str]
) -> AsyncIterator[tuple[Database, TcpProxy]]:
    """A pool of one connection (and its dedicated ones) whose every byte goes
    through a proxy that counts round trips (`db`: the database is migrated)."""
    async with counted_database(database_url, server_env, pool=1) as counted:
        yield counted


@pytest.fixture
def tenant() -> str:
    """A fresh tenant per test: isolation without truncation."""
    return f"t{secrets.token_hex(5)}"
