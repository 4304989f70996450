"""One integration round signs one checkpoint over the rows there were.

Under a steady load rows arrive while a batch is being integrated. The
integrator used to chase them at once, signing a checkpoint of a few rows every
few milliseconds (ten round trips and a signature each); a round now stops at
its first batch short of BATCH_ROWS, and the rows that arrived wait for the
next round, which their NOTIFY wakes. A backlog larger than a batch is still
integrated whole by one round.
"""

from __future__ import annotations

import secrets

import pytest

from kaireon_server.app import App
from kaireon_server.audit import tlog
from kaireon_server.audit.tlog import Integrator, TlogSettings
from kaireon_server.platform.audit_chain import AuditRow, insert_rows
from kaireon_server.platform.db import Database


async def _append(db: Database, tenant: str, n: int) -> None:
    rows = [AuditRow("probe", "probe", f"p{i}", "test") for i in range(n)]
    async with db.transaction(tenant) as con:
        await insert_rows(con, tenant, rows)


async def _checkpoints(db: Database, tenant: str) -> list[int]:
    async with db.owner_connection() as con:
        rows = await con.fetch(
            "SELECT size FROM audit_tlog_checkpoint WHERE tenant_id = $1 ORDER BY size", tenant
        )
    return [int(r["size"]) for r in rows]


class _UnderLoad(Integrator):
    """An integrator whose every batch is followed by one more append, as under a
    steady load; it gives up after `limit` batches (the old loop never ended)."""

    def __init__(self, db: Database, settings: TlogSettings, tenant: str, limit: int) -> None:
        super().__init__(db, settings)
        self.batches = 0
        self._limit = limit
        self._tenant = tenant

    async def _integrate_batch(self, tenant_id: str) -> int:
        self.batches += 1
        if self.batches > self._limit:
            raise AssertionError(f"still integrating after {self._limit} batches")
        n = await super()._integrate_batch(tenant_id)
        await _append(self.db, self._tenant, 1)
        return n


async def test_rows_arriving_during_a_round_wait_for_the_next(
    quiet_app: tuple[App, TlogSettings],
) -> None:
    app, settings = quiet_app
    assert app.db is not None
    tenant = f"t{secrets.token_hex(4)}"
    await _append(app.db, tenant, 4)
    integrator = _UnderLoad(app.db, settings, tenant, limit=3)

    assert await integrator.integrate(tenant) == 4
    assert integrator.batches == 1
    assert await _checkpoints(app.db, tenant) == [4]

    # The row that arrived is the next round's.
    assert await integrator.integrate(tenant) == 1
    assert await _checkpoints(app.db, tenant) == [4, 5]
    result, _more = await tlog.verify(app.db, settings, tenant_id=tenant, start=None, end=0)
    assert (result.valid, result.tree_size) == (True, 5)  # the sixth awaits its round


async def test_a_backlog_larger_than_a_batch_is_integrated_in_one_round(
    quiet_app: tuple[App, TlogSettings], monkeypatch: pytest.MonkeyPatch
) -> None:
    app, settings = quiet_app
    assert app.db is not None
    tenant = f"t{secrets.token_hex(4)}"
    monkeypatch.setattr(tlog, "BATCH_ROWS", 3)
    await _append(app.db, tenant, 7)

    assert await Integrator(app.db, settings).integrate(tenant) == 7
    assert await _checkpoints(app.db, tenant) == [3, 6, 7]
