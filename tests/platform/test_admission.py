"""Admission cannot be starved (platform/admission.py), through a real server:

- anonymous public calls (health, reflection) have their own budgets, per process
  and per peer address, and never take an authenticated caller's slot;
- one tenant holds at most its share of the process's calls in flight;
- a request whose pool acquire would queue is refused at once, with a retry
  hint (RetryInfo / Retry-After), and health keeps its own connection.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import asyncpg
import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from kaireon.audit.v1 import audit_pb2, audit_pb2_grpc
from kaireon.erasure.v1 import erasure_pb2, erasure_pb2_grpc
from kaireon_server.app import App
from kaireon_server.platform.admission import MAX_OPTION_SECONDS, AdmissionSettings, peer_address
from kaireon_server.platform.config import Settings
from kaireon_server.platform.errors import ConfigurationError
from tests.support.server import metadata

SERVING = health_pb2.HealthCheckResponse.SERVING


@asynccontextmanager
async def running(server_env: dict[str, str], **env: str) -> AsyncIterator[App]:
    app = App(Settings.from_env({**server_env, **env}))
    await app.start()
    try:
        yield app
    finally:
        await app.stop(grace=1)


def refusal(error: grpc.aio.AioRpcError) -> tuple[str, float | None]:
    """(ErrorInfo reason, RetryInfo seconds) of a refused call."""
    status = rpc_status.from_call(error)
    assert status is not None, error
    reason, delay = "", None
    for detail in status.details:
        info, retry = error_details_pb2.ErrorInfo(), error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            reason = info.reason
        elif detail.Unpack(retry):
            delay = retry.retry_delay.ToTimedelta().total_seconds()
    return reason, delay


async def first_state(watch: grpc.aio.UnaryStreamCall) -> str:
    try:
        reply = await watch.read()
    except grpc.aio.AioRpcError as error:
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error
        reason, delay = refusal(error)
        assert delay == 1.0, delay
        return reason
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


async def verify(stub: audit_pb2_grpc.AuditServiceStub, tenant: str) -> bool:
    reply = await stub.VerifyChain(
        audit_pb2.VerifyChainRequest(), metadata=metadata(tenant), timeout=30
    )
    return bool(reply.valid)


async def rest_verify(
    session: aiohttp.ClientSession, app: App, tenant: str
) -> tuple[int, dict[str, str]]:
    async with session.post(
        f"http://127.0.0.1:{app.http_port}/api/v1/audit:verify",
        headers={"X-Tenant-Id": tenant, "X-User-Role": "admin"},
        json={},
    ) as response:
        await response.read()
        return response.status, dict(response.headers)


@pytest.mark.parametrize(
    ("process_limit", "peer_limit", "served", "reason"),
    [(16, 8, 8, "PEER_RPCS_EXHAUSTED"), (8, 100, 8, "PUBLIC_RPCS_EXHAUSTED")],
    ids=["per-peer", "per-process"],
)
async def test_a_thousand_anonymous_watches_cannot_starve_callers_or_healthz(
    server_env: dict[str, str],
    tenant: str,
    process_limit: int,
    peer_limit: int,
    served: int,
    reason: str,
) -> None:
    async with running(
        server_env,
        KAIREON_PUBLIC_MAX_INFLIGHT=str(process_limit),
        KAIREON_PUBLIC_MAX_INFLIGHT_PER_PEER=str(peer_limit),
        # Well below the 1,000 anonymous streams: on main they filled it.
        KAIREON_GRPC_MAX_CONCURRENT_RPCS="100",
    ) as app:
        target = f"127.0.0.1:{app.grpc_port}"
        channels = [grpc.aio.insecure_channel(target) for _ in range(10)]
        try:
            watches = [
                health_pb2_grpc.HealthStub(channels[i % 10]).Watch(health_pb2.HealthCheckRequest())
                for i in range(1000)
            ]
            states = await asyncio.gather(*(first_state(w) for w in watches))
            assert states.count("SERVING") == served, sorted(set(states))
            assert states.count(reason) == 1000 - served
            # The public budget is full; every authenticated call still gets in,
            # and so do the probes' health Checks (liveness and readiness: they
            # take no slot, else the kubelet would restart a healthy replica),
            # while one more anonymous stream is refused.
            async with grpc.aio.insecure_channel(target) as channel:
                assert await verify(audit_pb2_grpc.AuditServiceStub(channel), tenant)
                health_stub = health_pb2_grpc.HealthStub(channel)
                for service in ("", "liveness"):
                    probe = await health_stub.Check(
                        health_pb2.HealthCheckRequest(service=service), timeout=5
                    )
                    assert probe.status == SERVING
                extra = health_stub.Watch(health_pb2.HealthCheckRequest())
                assert await first_state(extra) in ("PEER_RPCS_EXHAUSTED", "PUBLIC_RPCS_EXHAUSTED")
            async with aiohttp.ClientSession() as session:
                async with session.get(f"http://127.0.0.1:{app.http_port}/healthz") as health:
                    assert health.status == 200, await health.text()
                    assert (await health.json())["status"] == "SERVING"
                assert (await rest_verify(session, app, tenant))[0] == 200
            for watch in watches:
                watch.cancel()
            # The budget is given back: anonymous streams are served again.
            async with asyncio.timeout(10):
                while True:
                    again = health_pb2_grpc.HealthStub(channels[0]).Watch(
                        health_pb2.HealthCheckRequest()
                    )
                    state = await first_state(again)
                    again.cancel()
                    if state == "SERVING":
                        break
                    await asyncio.sleep(0.1)
            assert app.admission is not None and app.admission.public.inflight <= 1
        finally:
            for channel in channels:
                await channel.close()


@asynccontextmanager
async def held_pool(app: App) -> AsyncIterator[list[asyncpg.Connection]]:
    """Every pooled connection checked out: the pool is saturated."""
    assert app.db is not None
    pool = app.db.pool
    cons = [await pool.acquire() for _ in range(pool.get_max_size())]
    try:
        yield cons
    finally:
        for con in cons:
            await pool.release(con)


async def wait_inflight(app: App, count: int) -> None:
    assert app.admission is not None
    async with asyncio.timeout(10):
        while app.admission.calls.inflight < count:
            await asyncio.sleep(0.02)


async def test_one_tenant_cannot_take_every_call_slot(
    server_env: dict[str, str], tenant: str
) -> None:
    """Limit 4 and share 0.5: a tenant holds at most 2; a third tenant finds the
    process full (RPCS_EXHAUSTED), then everyone is served once calls finish."""
    other, third = tenant + "b", tenant + "c"
    async with running(
        server_env,
        KAIREON_GRPC_MAX_CONCURRENT_RPCS="4",
        KAIREON_TENANT_MAX_INFLIGHT_SHARE="0.5",
        KAIREON_DB_POOL_MIN="1",
        KAIREON_DB_POOL_MAX="2",
        # Calls wait for the pool here (no fail-fast), so they stay in flight.
        KAIREON_DB_POOL_MAX_WAITERS="100",
        KAIREON_DB_ACQUIRE_TIMEOUT="30",
    ) as app:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
            stub = audit_pb2_grpc.AuditServiceStub(channel)
            async with held_pool(app), aiohttp.ClientSession() as session:
                mine = [asyncio.create_task(verify(stub, tenant)) for _ in range(2)]
                await wait_inflight(app, 2)
                started = time.monotonic()
                with pytest.raises(grpc.aio.AioRpcError) as share:
                    await verify(stub, tenant)
                assert time.monotonic() - started < 1.0
                assert share.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert refusal(share.value) == ("TENANT_RPCS_EXHAUSTED", 1.0)
                # Another tenant still gets in while the first one is at its share.
                theirs = [asyncio.create_task(verify(stub, other)) for _ in range(2)]
                await wait_inflight(app, 4)
                with pytest.raises(grpc.aio.AioRpcError) as full:
                    await verify(stub, third)
                assert refusal(full.value) == ("RPCS_EXHAUSTED", 1.0)
                status, headers = await rest_verify(session, app, third)
                assert status == 429 and headers["Retry-After"] == "1"
            assert all(await asyncio.gather(*mine, *theirs))
            assert await verify(stub, third)
            assert app.admission is not None and app.admission.calls.inflight == 0


async def test_a_saturated_pool_refuses_reads_and_erasures_at_once(
    server_env: dict[str, str], tenant: str
) -> None:
    """No queue (KAIREON_DB_POOL_MAX_WAITERS=0): with every connection busy a read
    or an erasure is RESOURCE_EXHAUSTED with a retry hint in far less than the
    5 s acquire timeout, and health (its own connection) stays SERVING."""
    async with running(
        server_env,
        KAIREON_DB_POOL_MIN="1",
        KAIREON_DB_POOL_MAX="2",
        KAIREON_DB_POOL_MAX_WAITERS="0",
        KAIREON_DB_ACQUIRE_TIMEOUT="5",
        # A ping's bound is min(interval, 2 s): 0.2 s was exceeded once by
        # PostgreSQL 15 under the CI run's parallel passes (NOT_SERVING).
        KAIREON_HEALTH_INTERVAL="0.5",
    ) as app:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
            audit = audit_pb2_grpc.AuditServiceStub(channel)
            erasure = erasure_pb2_grpc.ErasureServiceStub(channel)
            health = health_pb2_grpc.HealthStub(channel)
            async with held_pool(app), aiohttp.ClientSession() as session:
                timings = []
                for call in (
                    lambda: verify(audit, tenant),
                    lambda: erasure.EraseCustomer(
                        erasure_pb2.EraseCustomerRequest(customer_id="c-1"),
                        metadata=metadata(tenant),
                        timeout=30,
                    ),
                ):
                    started = time.monotonic()
                    with pytest.raises(grpc.aio.AioRpcError) as info:
                        await call()
                    timings.append(time.monotonic() - started)
                    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                    assert refusal(info.value) == ("DB_POOL_BUSY", 1.0)
                started = time.monotonic()
                status, headers = await rest_verify(session, app, tenant)
                timings.append(time.monotonic() - started)
                assert status == 429 and headers["Retry-After"] == "1"
                print(f"refused after {max(timings) * 1000:.0f} ms (acquire timeout 5 s)")
                assert max(timings) < 1.0, timings
                # Several health polls later, still SERVING: the ping has its own connection.
                await asyncio.sleep(1.6)
                reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
                assert reply.status == SERVING
                async with session.get(f"http://127.0.0.1:{app.http_port}/healthz") as healthz:
                    assert healthz.status == 200
            # Free again: served (background workers, which wait for the pool,
            # may hold both connections for a moment first).
            async with asyncio.timeout(10):
                while True:
                    try:
                        assert await verify(audit, tenant)
                        break
                    except grpc.aio.AioRpcError as error:
                        assert refusal(error)[0] == "DB_POOL_BUSY"
                        await asyncio.sleep(0.1)


async def test_requests_queue_for_the_pool_up_to_max_waiters_then_are_refused(
    server_env: dict[str, str], tenant: str
) -> None:
    async with running(
        server_env,
        KAIREON_DB_POOL_MIN="1",
        KAIREON_DB_POOL_MAX="1",
        KAIREON_DB_POOL_MAX_WAITERS="6",
        KAIREON_DB_ACQUIRE_TIMEOUT="30",
    ) as app:
        assert app.db is not None
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
            stub = audit_pb2_grpc.AuditServiceStub(channel)
            async with held_pool(app):
                # Background workers (DSAR, flow sweeps) queue too: fill the
                # queue to its 6 waiters with requests.
                queued = []
                async with asyncio.timeout(10):
                    while app.db._acquiring < 6:
                        queued.append(asyncio.ensure_future(verify(stub, tenant)))
                        await asyncio.sleep(0.1)
                started = time.monotonic()
                with pytest.raises(grpc.aio.AioRpcError) as busy:
                    await verify(stub, tenant)
                assert time.monotonic() - started < 1.0
                assert refusal(busy.value) == ("DB_POOL_BUSY", 1.0)
            # Those that got into the queue waited and are served now (a background
            # worker queueing at the same moment may have taken a place).
            outcomes = await asyncio.gather(*queued, return_exceptions=True)
            assert True in outcomes, outcomes
            for outcome in outcomes:
                if isinstance(outcome, grpc.aio.AioRpcError):
                    assert refusal(outcome)[0] == "DB_POOL_BUSY", outcome
                else:
                    assert outcome is True, outcome


async def test_background_work_still_waits_for_the_pool(
    server_env: dict[str, str],
) -> None:
    """Fail-fast is for request handlers only: work outside one (a flow run, a
    DSAR worker, this test) waits for a connection as before."""
    async with running(
        server_env,
        KAIREON_DB_POOL_MIN="1",
        KAIREON_DB_POOL_MAX="1",
        KAIREON_DB_POOL_MAX_WAITERS="0",
        KAIREON_DB_ACQUIRE_TIMEOUT="20",
    ) as app:
        db = app.db
        assert db is not None

        async def background() -> int:
            async with db.connection() as con:
                return int(await con.fetchval("SELECT 1"))

        async with held_pool(app):
            waiter = asyncio.create_task(background())
            await asyncio.sleep(0.5)
            assert not waiter.done()  # queued, not refused
        assert await asyncio.wait_for(waiter, 20) == 1


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("KAIREON_TENANT_MAX_INFLIGHT_SHARE", "1.5"),
        ("KAIREON_TENANT_MAX_INFLIGHT_SHARE", "half"),
        ("KAIREON_PUBLIC_MAX_INFLIGHT", "0"),
        ("KAIREON_PUBLIC_MAX_INFLIGHT_PER_PEER", "-1"),
        ("KAIREON_GRPC_MAX_CONNECTION_IDLE_SECONDS", "-5"),
        ("KAIREON_RETRY_AFTER_SECONDS", "soon"),
        # Beyond grpc-core's int32 milliseconds: an OverflowError at start before.
        ("KAIREON_GRPC_KEEPALIVE_TIME_SECONDS", "1e10"),
        ("KAIREON_GRPC_MAX_CONNECTION_IDLE_SECONDS", "3000000"),
        ("KAIREON_GRPC_HANDSHAKE_TIMEOUT_SECONDS", "1e300"),
    ],
)
def test_bad_admission_settings_are_refused_at_start(name: str, value: str) -> None:
    with pytest.raises(ConfigurationError, match=name):
        AdmissionSettings.from_env({name: value})


def test_the_tenant_share_rule_and_the_grpc_options() -> None:
    assert AdmissionSettings(max_inflight=1000, tenant_share=0.5).tenant_max_inflight == 500
    assert AdmissionSettings(max_inflight=4, tenant_share=0.1).tenant_max_inflight == 1
    assert AdmissionSettings(max_inflight=0).tenant_max_inflight == 0  # no limit at all
    options = dict(
        AdmissionSettings.from_env(
            {
                "KAIREON_GRPC_MAX_CONNECTION_IDLE_SECONDS": "7",
                "KAIREON_GRPC_MAX_CONNECTION_AGE_SECONDS": "60",
                "KAIREON_GRPC_MAX_CONNECTION_AGE_GRACE_SECONDS": "5",
            }
        ).grpc_options()
    )
    assert options["grpc.max_connection_idle_ms"] == 7000
    assert options["grpc.max_connection_age_ms"] == 60000
    assert options["grpc.max_connection_age_grace_ms"] == 5000
    assert "grpc.max_connection_age_ms" not in dict(AdmissionSettings().grpc_options())


@pytest.mark.parametrize(
    ("peer", "address"),
    [
        ("ipv4:10.1.2.3:5555", "10.1.2.3"),
        ("ipv6:[::1]:5555", "::1"),
        ("ipv6:%5B::1%5D:5555", "::1"),  # as grpc-core writes it
        ("ipv6:[fe80::1%eth0]:80", "fe80::1%eth0"),
        ("unix:/tmp/socket", "unix"),
        ("", "unknown"),
    ],
)
def test_peers_are_counted_by_address_not_port(peer: str, address: str) -> None:
    assert peer_address(peer) == address


def test_the_longest_allowed_grpc_seconds_start_a_server() -> None:
    """The bound is grpc-core's own: its largest value is accepted by a real server."""
    names = (
        "KAIREON_GRPC_KEEPALIVE_TIME_SECONDS",
        "KAIREON_GRPC_KEEPALIVE_TIMEOUT_SECONDS",
        "KAIREON_GRPC_MAX_CONNECTION_IDLE_SECONDS",
        "KAIREON_GRPC_MAX_CONNECTION_AGE_SECONDS",
        "KAIREON_GRPC_MAX_CONNECTION_AGE_GRACE_SECONDS",
        "KAIREON_GRPC_HANDSHAKE_TIMEOUT_SECONDS",
    )
    settings = AdmissionSettings.from_env(dict.fromkeys(names, str(MAX_OPTION_SECONDS)))
    server = grpc.aio.server(options=settings.grpc_options())
    assert server.add_insecure_port("127.0.0.1:0") > 0
