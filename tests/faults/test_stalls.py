"""A stalled database never hangs a call: every unary RPC family answers
UNAVAILABLE (or DEADLINE_EXCEEDED for erasure, whose budget is its own
deadline) within the configured bounds, or DEADLINE_EXCEEDED at the caller's deadline;
the connection it was using is given up at once, and the server serves again
as soon as the database answers, without a restart.

The proxy stalls every byte in both directions, existing connections and new
ones alike: a hung network, or a PostgreSQL that accepts but never answers.
Three situations per family: the pool holds an idle connection (the statement
stalls), the pool must open one (the handshake stalls), and the caller set a
deadline shorter than the server's bounds.
"""

from __future__ import annotations

import asyncio

import grpc
import pytest

from kaireon_server.demo.seed import SeedSize, seed_tenant
from kaireon_server.platform.config import Settings
from kaireon_server.platform.db import Database
from kaireon_server.platform.errors import ConfigurationError
from tests.faults.calls import FAMILIES, error_reason
from tests.faults.conftest import Proxied, StartProxied

# Fault injection: each call waits out a stall's timeout (slow tier).
pytestmark = pytest.mark.slow
COMMAND_TIMEOUT = 1.5  # KAIREON_DB_COMMAND_TIMEOUT
ACQUIRE_TIMEOUT = 1.0  # KAIREON_DB_ACQUIRE_TIMEOUT (also bounds opening a connection)
ERASURE_BUDGET = 1.5  # KAIREON_ERASURE_TIMEOUT_MS / 1000
DEADLINE = 0.8  # the caller's, when it sets one
# Scheduling slack on a shared 2-core machine: the bound proves "answers", not speed.
SLACK = 3.0
GUARD = 60.0  # a call still open after this is a hang

ENV = {
    "KAIREON_DB_POOL_MIN": "1",
    "KAIREON_DB_POOL_MAX": "1",
    "KAIREON_DB_ACQUIRE_TIMEOUT": str(ACQUIRE_TIMEOUT),
    "KAIREON_DB_STATEMENT_TIMEOUT_MS": "1000",
    "KAIREON_DB_COMMAND_TIMEOUT": str(COMMAND_TIMEOUT),
    "KAIREON_ERASURE_TIMEOUT_MS": str(int(ERASURE_BUDGET * 1000)),
}


async def _healthy(server: Proxied, family: str, tenant: str) -> float:
    """Seconds until the call succeeds (the pool may still be reconnecting)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with asyncio.timeout(30):
        while True:
            try:
                await FAMILIES[family](server.channel, tenant, 10)
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE:
                    raise
                await asyncio.sleep(0.1)
                continue
            return loop.time() - started


async def _in_use(server: Proxied) -> int:
    """Pooled connections still checked out, once the pool has had a moment."""
    assert server.app.db is not None
    pool = server.app.db.pool
    for _ in range(40):
        if pool.get_size() == pool.get_idle_size():
            return 0
        await asyncio.sleep(0.05)
    return pool.get_size() - pool.get_idle_size()


async def _stalled_call(
    server: Proxied, family: str, tenant: str, deadline: float | None, *, cut_pool: bool
) -> tuple[grpc.StatusCode, str, float, int]:
    """Stall (and cut the pool's connections, so it must open new ones), call,
    heal: (status code, reason, seconds to answer, connections left in use)."""
    call = FAMILIES[family]
    loop = asyncio.get_running_loop()
    server.proxy.stall()
    if cut_pool:
        assert server.proxy.drop(application_name="kaireon") == 1
        assert server.app.db is not None
        async with asyncio.timeout(5):
            while server.app.db.pool.get_size():  # asyncpg has seen the cut
                await asyncio.sleep(0.01)
    started = loop.time()
    try:
        await asyncio.wait_for(call(server.channel, tenant, deadline), GUARD)
    except grpc.aio.AioRpcError as exc:
        code, reason = exc.code(), error_reason(exc)
    else:
        code, reason = grpc.StatusCode.OK, ""
    elapsed = loop.time() - started
    left = await _in_use(server)  # still stalled: nothing may be stuck in the pool
    server.proxy.heal()
    return code, reason, elapsed, left


@pytest.mark.parametrize("family", sorted(FAMILIES))
async def test_a_stalled_database_never_hangs_a_call(
    proxied_server: StartProxied, db: Database, tenant: str, family: str
) -> None:
    await seed_tenant(db, tenant, SeedSize(customers=3, interactions_per_customer=2))
    server = await proxied_server(**ENV)
    server_bound = ERASURE_BUDGET + 0.25 if family == "erasure" else COMMAND_TIMEOUT
    # A stalled statement is a lost connection (UNAVAILABLE); erasure may run out
    # of its budget first (DEADLINE_EXCEEDED): both as docs/ERASURE.md documents.
    allowed = {grpc.StatusCode.UNAVAILABLE}
    if family == "erasure":
        allowed.add(grpc.StatusCode.DEADLINE_EXCEEDED)
    figures = []
    recovered: list[float] = []
    for situation in ("statement stalls", "connect stalls", "caller deadline"):
        await _healthy(server, family, tenant)
        await server.proxy.quiet()
        deadline = DEADLINE if situation == "caller deadline" else None
        code, reason, elapsed, left = await _stalled_call(
            server, family, tenant, deadline, cut_pool=situation == "connect stalls"
        )
        figures.append((situation, code.name, reason, round(elapsed, 2)))
        if deadline is not None:
            assert code == grpc.StatusCode.DEADLINE_EXCEEDED, (situation, code, reason)
            assert elapsed < deadline + SLACK, (situation, elapsed)
        else:
            assert code in allowed, (situation, code, reason)
            bound = server_bound + (ACQUIRE_TIMEOUT if situation == "connect stalls" else 0)
            assert elapsed < bound + SLACK, (situation, elapsed)
        assert left == 0, f"{situation}: {left} pooled connection(s) stuck on the stalled socket"
        # Healed: the same call succeeds on the same server, no restart.
        recovered.append(round(await _healthy(server, family, tenant), 2))
    print(f"\nFIGURE stall {family}: {figures}, served again after the heal in {recovered}s")


def test_the_command_timeout_defaults_to_the_statement_timeout_plus_five_seconds(
    server_env: dict[str, str],
) -> None:
    env = {**server_env, "KAIREON_DB_STATEMENT_TIMEOUT_MS": "2000"}
    assert Settings.from_env(env).db_command_timeout == 7.0
    assert Settings.from_env({**env, "KAIREON_DB_COMMAND_TIMEOUT": "1.5"}).db_command_timeout == 1.5
    for bad in ("0", "-1", "soon"):
        with pytest.raises(ConfigurationError, match="KAIREON_DB_COMMAND_TIMEOUT"):
            Settings.from_env({**env, "KAIREON_DB_COMMAND_TIMEOUT": bad})
