"""Reads do not multiply writes: polling the platform's list call through the
REST adapter records an export's access once per principal, and access rows
never make the subject's next export grow (docs/DSAR.md, "Access rows")."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from kaireon_server.app import App
from kaireon_server.platform.db import Database
from tests.dsar.conftest import assert_canonical, create, download, wait_done

POLLS = 100


@pytest.fixture
async def http(app: App) -> AsyncIterator[tuple[aiohttp.ClientSession, str]]:
    async with aiohttp.ClientSession() as session:
        yield session, f"http://127.0.0.1:{app.http_port}/api/v1/dsar"


def _headers(tenant: str, role: str = "operator") -> dict[str, str]:
    return {"X-Tenant-Id": tenant, "X-User-Role": role}


async def _poll(session: aiohttp.ClientSession, base: str, tenant: str, role: str) -> list[Any]:
    async with session.get(f"{base}?status=completed", headers=_headers(tenant, role)) as response:
        assert response.status == 200
        requests: list[Any] = json.loads(await response.read())["requests"]
    return requests


async def _audit(db: Database, tenant: str) -> list[tuple[str, str, str, str]]:
    """(action, entity id, actor, via) of every audit row of the tenant, in order."""
    async with db.transaction(tenant, readonly=True) as con:
        rows = await con.fetch(
            "SELECT action, entity_id, actor, changes->>'via' AS via FROM audit_log "
            "WHERE tenant_id = $1 ORDER BY seq",
            tenant,
        )
    return [(r["action"], r["entity_id"], r["actor"], r["via"]) for r in rows]


async def _export(stub: Any, tenant: str, subject: str) -> tuple[str, dict[str, Any]]:
    request = await create(stub, tenant, subject)
    done = await wait_done(stub, tenant, request.id)
    assert done.status == "completed", done.error
    return done.id, assert_canonical(await download(stub, tenant, done.id))


async def test_polling_completed_100_times_adds_no_audit_rows_and_no_export_growth(
    http, stub, seeded, db
):
    session, base = http
    ids = [(await _export(stub, seeded, subject))[0] for subject in ("cust_00001", "cust_00002")]
    before_first_poll = await _audit(db, seeded)

    # The first poll shows both exports inline to the operator: one access row each.
    listed = await _poll(session, base, seeded, "operator")
    assert sorted(r["id"] for r in listed) == sorted(ids)
    assert all("exportedData" in r for r in listed)
    after_first_poll = await _audit(db, seeded)
    new = after_first_poll[len(before_first_poll) :]
    assert sorted(new) == sorted(
        ("dsar_export_downloaded", i, "operator@headers", "inline") for i in ids
    )

    # The subject's export now, then 100 polls, then the next export.
    first_id, first = await _export(stub, seeded, "cust_00001")
    settled = await _audit(db, seeded)
    for _ in range(POLLS):
        listed = await _poll(session, base, seeded, "operator")
        assert len(listed) == 3 and all("exportedData" in r for r in listed)
    assert await _audit(db, seeded) == [
        *settled,
        ("dsar_export_downloaded", first_id, "operator@headers", "inline"),
    ], "only the first inline showing of the new export is an access row"

    # Another principal is another disclosure: one row per export, once.
    for _ in range(3):
        await _poll(session, base, seeded, "admin")
    admin_rows = [r for r in await _audit(db, seeded) if r[2] == "admin@headers"]
    assert sorted(r[1] for r in admin_rows) == sorted([*ids, first_id])

    _, second = await _export(stub, seeded, "cust_00001")
    # Access rows are not the subject's data: neither export holds one, and the
    # next export grows only by the previous request's own rows (its creation
    # and completion), however often the exports were read in between.
    for document in (first, second):
        actions = [row["action"] for row in document["data"].get("auditLogs", [])]
        assert "dsar_export_downloaded" not in actions
    grown = len(second["data"]["auditLogs"]) - len(first["data"]["auditLogs"])
    assert grown == 2
    assert second["counts"]["auditLogs"] == first["counts"]["auditLogs"] + 2


async def test_every_download_is_an_access_row(http, stub, seeded, db):
    session, base = http
    request_id, _ = await _export(stub, seeded, "cust_00003")  # one download
    for _ in range(2):
        async with session.get(f"{base}/{request_id}/export", headers=_headers(seeded)) as resp:
            assert resp.status == 200
            await resp.read()
    downloads = [r for r in await _audit(db, seeded) if r[3] == "download"]
    assert [r[1] for r in downloads] == [request_id] * 3


async def test_concurrent_first_polls_record_each_export_once(http, stub, seeded, db):
    """Eight polls at once, each the first for its principal half the time: no
    deadlock between the disclosure locks and the audit chain's, no duplicate."""
    session, base = http
    ids = [(await _export(stub, seeded, f"cust_0000{n}"))[0] for n in (1, 2, 3)]
    before = len(await _audit(db, seeded))
    pages = await asyncio.gather(
        *(_poll(session, base, seeded, ("operator", "admin")[n % 2]) for n in range(8))
    )
    assert all(sorted(r["id"] for r in page) == sorted(ids) for page in pages)
    added = (await _audit(db, seeded))[before:]
    assert sorted((r[1], r[2]) for r in added) == sorted(
        (i, actor) for i in ids for actor in ("operator@headers", "admin@headers")
    )
