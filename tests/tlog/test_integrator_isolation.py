"""One tenant's refused tree holds no other tenant back.

The integrator walks every pending tenant page by page; a tenant whose stored
tree it refuses to sign (here: the tree state rewritten with the database
owner's access) is logged once and set aside for a while, and the tenants
after it, even more than a page of them later, still get their checkpoints.
"""

from __future__ import annotations

import logging
import secrets

import pytest

from kaireon_client.tlog.merkle import encode_hash
from kaireon_server.app import App
from kaireon_server.audit import tlog
from kaireon_server.audit.tlog import Integrator, TlogSettings
from kaireon_server.platform.audit_chain import append_audit
from kaireon_server.platform.db import Database


async def _append(db: Database, tenant: str) -> None:
    async with db.transaction(tenant) as con:
        await append_audit(
            con, tenant, action="probe", entity_type="probe", entity_id="p", actor="test"
        )


async def _size(db: Database, tenant: str) -> int:
    async with db.transaction(tenant) as con:
        size = await con.fetchval("SELECT size FROM audit_tlog_state WHERE tenant_id = $1", tenant)
    return int(size or 0)


def _refusals(caplog: pytest.LogCaptureFixture, run: str) -> list[str]:
    """This test's refusals: integrate_pending also meets other tests' tenants on
    the shared database, some of whose chains those tests broke on purpose."""
    return [
        m
        for r in caplog.records
        if "refusing to sign" in (m := r.getMessage()) and f"{run}broken" in m
    ]


async def test_refused_tenants_do_not_hold_back_the_others(
    quiet_app: tuple[App, TlogSettings],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app, settings = quiet_app
    db = app.db
    assert db is not None
    integrator = Integrator(db, settings)
    monkeypatch.setattr(tlog, "PENDING_PAGE", 2)
    run = secrets.token_hex(3)
    # Three refused tenants sort before the healthy one: more than a page of them.
    broken = [f"a{run}broken{i}" for i in range(3)]
    healthy = f"z{run}healthy"
    for tenant in broken:
        await _append(db, tenant)
        assert await integrator.integrate(tenant) == 1
        async with db.owner_connection() as con:
            await con.execute(
                "UPDATE audit_tlog_state SET compact = $2 WHERE tenant_id = $1",
                tenant,
                {"size": 1, "hashes": [encode_hash(bytes(32))]},
            )
        await _append(db, tenant)  # pending again, over a tree that is not the checkpoint's
    await _append(db, healthy)

    caplog.set_level(logging.ERROR, logger="kaireon_server.audit.tlog")
    await integrator.integrate_pending()
    assert await _size(db, healthy) == 1
    assert [await _size(db, t) for t in broken] == [1, 1, 1]  # nothing signed over them
    refusals = _refusals(caplog, run)
    assert len(refusals) == 3 and all(any(t in m for m in refusals) for t in broken), refusals

    # Set aside: the next rounds neither retry nor log them again ...
    caplog.clear()
    await _append(db, healthy)
    await integrator.integrate_pending()
    assert await _size(db, healthy) == 2
    assert _refusals(caplog, run) == []
    # ... until their time is up: then each is checked (and refused) once more.
    for tenant in broken:
        integrator._refused[tenant] = 0.0
    await integrator.integrate_pending()
    assert len(_refusals(caplog, run)) == 3
