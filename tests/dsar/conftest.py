"""DSAR fixtures: stubs on the session server, seeded tenants, and helpers that wait on the watch stream."""

from __future__ import annotations

import asyncio
import base64
import json
import os
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest
import rfc8785

from kaireon.dsar.v1 import dsar_pb2, dsar_pb2_grpc
from kaireon_server.app import App
from kaireon_server.demo.seed import SeedSize, seed_tenant
from kaireon_server.platform.config import Settings
from kaireon_server.platform.db import Database
from tests.support.server import metadata

TERMINAL = ("completed", "failed")


def new_key_spec(*versions: str) -> str:
    """A key ring spec with fresh random keys (generated per test run, never stored)."""
    return ",".join(f"{v}:{base64.b64encode(os.urandom(32)).decode()}" for v in versions)


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> dsar_pb2_grpc.DsarServiceStub:
    return dsar_pb2_grpc.DsarServiceStub(channel)


@pytest.fixture
async def seeded(db: Database, tenant: str) -> str:
    await seed_tenant(db, tenant, SeedSize(customers=3, interactions_per_customer=5))
    return tenant


async def create(
    stub: dsar_pb2_grpc.DsarServiceStub,
    tenant: str,
    subject: str,
    *,
    encrypt: bool = False,
    key: str = "",
    role: str = "operator",
) -> dsar_pb2.DsarRequest:
    reply = await stub.CreateDsarRequest(
        dsar_pb2.CreateDsarRequestRequest(
            request_type="export", subject_id=subject, encrypt=encrypt, idempotency_key=key
        ),
        metadata=metadata(tenant, role),
    )
    return reply.request


async def watch_states(
    stub: dsar_pb2_grpc.DsarServiceStub,
    tenant: str,
    request_id: str,
    *,
    after_version: int = 0,
    timeout: float = 60,
    on_state: Callable[[dsar_pb2.DsarRequest], Any] | None = None,
) -> list[dsar_pb2.DsarRequest]:
    """Every state the watch stream sends until a terminal one."""
    states: list[dsar_pb2.DsarRequest] = []
    call = stub.WatchDsarRequest(
        dsar_pb2.WatchDsarRequestRequest(id=request_id, after_version=after_version),
        metadata=metadata(tenant, "operator"),
        timeout=timeout,
    )
    async for item in call:
        states.append(item.request)
        if on_state is not None:
            result = on_state(item.request)
            if asyncio.iscoroutine(result):
                await result
    return states


async def wait_done(
    stub: dsar_pb2_grpc.DsarServiceStub, tenant: str, request_id: str, timeout: float = 60
) -> dsar_pb2.DsarRequest:
    states = await watch_states(stub, tenant, request_id, timeout=timeout)
    assert states and states[-1].status in TERMINAL, [s.status for s in states]
    return states[-1]


async def download(
    stub: dsar_pb2_grpc.DsarServiceStub, tenant: str, request_id: str, role: str = "operator"
) -> bytes:
    parts = []
    async for item in stub.StreamDsarExport(
        dsar_pb2.StreamDsarExportRequest(id=request_id), metadata=metadata(tenant, role)
    ):
        parts.append(item.chunk.data)
    return b"".join(parts)


async def export_of(
    stub: dsar_pb2_grpc.DsarServiceStub, tenant: str, subject: str, **kwargs: Any
) -> tuple[dsar_pb2.DsarRequest, bytes]:
    """Create, wait, download: the finished request and the document's bytes."""
    request = await create(stub, tenant, subject, **kwargs)
    done = await wait_done(stub, tenant, request.id)
    assert done.status == "completed", done.error
    return done, await download(stub, tenant, request.id)


def assert_canonical(document: bytes) -> Any:
    """The bytes are RFC 8785 canonical JSON; returns the parsed value."""
    value = json.loads(document)
    assert rfc8785.dumps(value) == document
    return value


@pytest.fixture
async def server_with_env(server_env: dict[str, str]) -> AsyncIterator[Callable[..., Any]]:
    """Start extra in-process servers (own settings) on the session database."""
    started: list[App] = []

    async def start(**overrides: str) -> App:
        app = App(Settings.from_env({**server_env, **overrides}))
        await app.start()
        started.append(app)
        return app

    yield start
    for app in reversed(started):
        await app.stop(grace=1)


@pytest.fixture
async def no_session_workers(app: App) -> AsyncIterator[None]:
    """Park the session server's export workers, so the test decides who runs a job."""
    from kaireon_server.dsar.service import DsarCapability

    capability = next(c for c in app.capabilities if isinstance(c, DsarCapability))
    await capability.workers.stop()
    yield
    capability.workers.start()


def worker_env(**overrides: str) -> dict[str, str]:
    """Settings for a server whose worker is slow enough to be caught mid-export."""
    env = {
        "KAIREON_DSAR_WORKERS": "1",
        "KAIREON_DSAR_CHUNK_BYTES": "1024",
        "KAIREON_DSAR_THROTTLE_MS": "150",
        "KAIREON_DSAR_LEASE_SECONDS": "2",
        "KAIREON_DSAR_HEARTBEAT_SECONDS": "0.4",
        "KAIREON_DSAR_POLL_SECONDS": "0.2",
        "KAIREON_DSAR_RETRY_BASE_SECONDS": "0.2",
    }
    env.update(overrides)
    return env


async def audit_actions(db: Database, tenant: str, entity_id: str) -> list[str]:
    async with db.transaction(tenant, readonly=True) as con:
        rows = await con.fetch(
            "SELECT action FROM audit_log WHERE tenant_id = $1 AND entity_id = $2 ORDER BY seq",
            tenant,
            entity_id,
        )
    return [r["action"] for r in rows]


async def stored_attempts(db: Database, tenant: str, request_id: str) -> list[tuple[int, int]]:
    """(attempt, chunk count) of every stored export of a request."""
    async with db.transaction(tenant, readonly=True) as con:
        rows = await con.fetch(
            "SELECT attempt, count(*) AS n, max(seq) AS top FROM dsar_export_chunk "
            "WHERE tenant_id = $1 AND request_id = $2::uuid GROUP BY attempt ORDER BY attempt",
            tenant,
            request_id,
        )
    for r in rows:
        assert r["top"] == r["n"] - 1  # contiguous 0..n-1
    return [(r["attempt"], r["n"]) for r in rows]


async def add_interactions(db: Database, tenant: str, subject: str, n: int) -> None:
    """n interaction rows for one subject, generated inside PostgreSQL (a million
    rows take minutes on a loaded machine: no statement timeout for this one)."""
    async with db.transaction(tenant) as con:
        await con.execute("SET LOCAL statement_timeout = 0")
        await con.execute(
            """
            INSERT INTO interaction_history (tenant_id, customer_id, offer_id, channel,
                event_type, decision_id, occurred_at, attributes)
            SELECT $1, $2, 'OFFER_' || chr(65 + g % 6),
                   (ARRAY['email','sms','web','app'])[1 + g % 4],
                   (ARRAY['recommendation','impression','click','conversion'])[1 + g % 4],
                   CASE WHEN g % 3 = 0 THEN 'dec_' || g END,
                   timestamptz '2026-01-01' + g * interval '1 second',
                   jsonb_build_object('device', (ARRAY['ios','android','desktop'])[1 + g % 3])
              FROM generate_series(1, $3) g
            """,
            tenant,
            subject,
            n,
            timeout=900,
        )
