"""Nothing is lost when the server is killed (SIGKILL) in the middle of
deliveries: `kaireon-server` runs as a subprocess on its own database, is
killed while the random receiver holds posts open, then started again; every
event arrives (at least once, same webhook-id), signed, in order per subject."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import asyncpg
import pytest

from kaireon_server.requests import webhooks
from tests.requests.random_receiver import Behaviour, running_receiver
from tests.support.pg import create_database, drop_database
from tests.support.server import ServerProcess, base_env

pytestmark = pytest.mark.slow

TENANT = "kill9"
ENV = {
    "KAIREON_PROCESSOR_BACKOFF_SECONDS": "0.05",
    "KAIREON_PROCESSOR_MAX_BACKOFF_SECONDS": "0.2",
    "KAIREON_PROCESSOR_TIMEOUT_SECONDS": "2",
    "KAIREON_PROCESSOR_POLL_SECONDS": "0.2",
    "KAIREON_PROCESSOR_MAX_ATTEMPTS": "100",
}


async def _statuses(con: asyncpg.Connection) -> list[str]:
    rows = await con.fetch("SELECT status FROM processor_outbox WHERE tenant_id = $1", TENANT)
    return [r["status"] for r in rows]


async def test_kill_9_mid_delivery_then_restart_delivers_everything(
    pg_admin_dsn: str, signing_key_path: Path
):
    # Its own database: the session's in-process server must not deliver these.
    dsn = await create_database(pg_admin_dsn, "kaireon_kill9")
    env = base_env(dsn, COSIGN_KEY=str(signing_key_path), **ENV)
    secret = webhooks.new_secret()
    behaviour = Behaviour(fail=0.2, delay=0.6, delay_seconds=0.8, duplicate=0.2, seed=99)
    first = ServerProcess(env).start()  # applies the migrations
    con = await asyncpg.connect(dsn)  # the owner: no RLS, to seed the outbox directly
    try:
        async with running_receiver(secret, behaviour) as receiver:
            expected: dict[str, list[int]] = {}
            async with con.transaction():
                pid = await con.fetchval(
                    "INSERT INTO processor_recipient (tenant_id, name, url, signing_secret, "
                    "created_by) VALUES ($1, 'crm', $2, $3, 'test') RETURNING id",
                    TENANT,
                    receiver.url,
                    secret,
                )
                for n in range(8):
                    subject = f"cust_{n % 2}"
                    expected.setdefault(subject, []).append(n)
                    await con.execute(
                        "INSERT INTO processor_outbox (tenant_id, recipient_id, event_type, "
                        "subject_id, payload) VALUES ($1, $2, 'subject.erased', $3, $4)",
                        TENANT,
                        pid,
                        subject,
                        json.dumps(
                            {"type": "subject.erased", "data": {"subjectId": subject, "n": n}}
                        ),
                    )
            try:
                deadline = time.monotonic() + 60
                while receiver.requests < 2 and time.monotonic() < deadline:
                    await asyncio.sleep(0.02)
                assert receiver.requests >= 2, "the first server never posted"
                assert first.proc is not None
                first.proc.kill()  # SIGKILL: no drain, leases left behind
                first.proc.wait(timeout=10)
            finally:
                first.stop()
            assert "pending" in await _statuses(con), "all delivered before the kill: no proof"

            second = ServerProcess(env).start()
            try:
                async with asyncio.timeout(120):
                    while set(await _statuses(con)) != {"delivered"}:
                        await asyncio.sleep(0.2)
            finally:
                second.stop()
        assert receiver.bad_signatures == 0
        order: dict[str, list[int]] = {}
        for _, event in receiver.first_arrivals():
            data = event["data"]
            assert isinstance(data, dict)
            order.setdefault(str(data["subjectId"]), []).append(int(data["n"]))
        assert order == expected
    finally:
        await con.close()
        await drop_database(pg_admin_dsn, dsn)
