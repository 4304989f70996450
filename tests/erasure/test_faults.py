"""Failures at any step roll the whole erasure back: nothing deleted, no audit row.

Faults are real: a trigger that raises for this test's tenant only (so other
tests are unaffected), a backend terminated while it waits on a lock, a
statement timeout that fires.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import grpc
import pytest

from kaireon.erasure.v1 import erasure_pb2
from kaireon_server.erasure.eraser import EraseCommand, erase_customer
from kaireon_server.erasure.model import ErasureTimedOut
from kaireon_server.platform import data_map
from kaireon_server.platform.db import Database
from kaireon_server.platform.signing import NullSigner
from tests.erasure.support import (
    audit_events,
    chain_valid,
    erase,
    error_reason,
    row_locked,
    snapshot,
    waiting_backend,
)
from tests.support.server import metadata

CUSTOMER = "cust_00002"

_FAULT_FUNCTION = """
CREATE OR REPLACE FUNCTION erasure_test_fault() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (CASE WHEN TG_OP = 'INSERT' THEN NEW.tenant_id ELSE OLD.tenant_id END) = TG_ARGV[0] THEN
        RAISE EXCEPTION 'injected fault';
    END IF;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RETURN NEW;
END $$
"""


@asynccontextmanager
async def fault(db: Database, tenant: str, table: str, event: str) -> AsyncIterator[None]:
    """A trigger on `table` that raises on `event` for rows of `tenant` only."""
    name = f"erasure_fault_{tenant}"
    async with db.owner_connection() as con:
        await con.execute(_FAULT_FUNCTION)
        await con.execute(
            f'CREATE TRIGGER "{name}" BEFORE {event} ON "{table}" FOR EACH ROW '
            f"EXECUTE FUNCTION erasure_test_fault('{tenant}')"
        )
    try:
        yield
    finally:
        async with db.owner_connection() as con:
            await con.execute(f'DROP TRIGGER "{name}" ON "{table}"')


def _steps() -> list[tuple[str, str]]:
    """(table, event) of every write an erasure makes, in its order."""
    steps = [(t.table, "DELETE") for t in data_map.erasure_order()]
    steps.append(("ds_{tenant}_loyalty", "DELETE"))
    steps += [("audit_log", "UPDATE"), ("audit_log", "INSERT"), ("audit_chain_head", "UPDATE")]
    return steps


@pytest.mark.parametrize(("table", "event"), _steps(), ids=lambda v: str(v))
async def test_a_failure_at_any_step_rolls_everything_back(
    stub, audit_stub, db: Database, seeded: str, table: str, event: str
):
    table = table.format(tenant=seeded)
    # Earlier audit rows about the customer, so the redaction step has work to do.
    await stub.SetLegalHold(
        erasure_pb2.SetLegalHoldRequest(customer_id=CUSTOMER, reason="CASE-1"),
        metadata=metadata(seeded),
    )
    await stub.ReleaseLegalHold(
        erasure_pb2.ReleaseLegalHoldRequest(customer_id=CUSTOMER), metadata=metadata(seeded)
    )
    before = await snapshot(db, seeded)
    events_before = await audit_events(audit_stub, seeded)

    async with fault(db, seeded, table, event):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await erase(stub, seeded, CUSTOMER)

    error = caught.value
    assert error.code() == grpc.StatusCode.INTERNAL
    assert error_reason(error) == "INTERNAL"
    assert "injected" not in error.details()
    assert await snapshot(db, seeded) == before
    assert await audit_events(audit_stub, seeded) == events_before
    assert await chain_valid(audit_stub, seeded)
    # With the fault gone the same erasure goes through.
    reply = await erase(stub, seeded, CUSTOMER)
    assert reply.total_deleted > 0


async def test_a_dropped_database_connection_rolls_back_and_answers_unavailable(
    stub, audit_stub, db: Database, seeded: str
):
    before = await snapshot(db, seeded)
    events_before = await audit_events(audit_stub, seeded)
    # delivery comes after the eight platform tables: those are deleted (not
    # yet committed) when the connection dies.
    async with row_locked(db, seeded, "delivery", CUSTOMER) as holder:
        call = asyncio.ensure_future(erase(stub, seeded, CUSTOMER))
        pid = await waiting_backend(holder, "delivery")
        assert await holder.fetchval("SELECT pg_terminate_backend($1)", pid)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert error_reason(caught.value) == "DB_UNAVAILABLE"
    assert await snapshot(db, seeded) == before
    assert await audit_events(audit_stub, seeded) == events_before
    assert await chain_valid(audit_stub, seeded)
    # The pool replaced the dead connection; a retry succeeds (erasure is idempotent).
    reply = await erase(stub, seeded, CUSTOMER)
    assert reply.deleted_counts.delivery == 2


async def test_the_statement_timeout_bounds_the_transaction(db: Database, seeded: str):
    before = await snapshot(db, seeded)
    command = EraseCommand(seeded, "test", CUSTOMER, dry_run=False, timeout=0.5)
    async with row_locked(db, seeded, "delivery", CUSTOMER):
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(asyncpg.QueryCanceledError):
            await erase_customer(db, NullSigner(), command)
        assert loop.time() - started < 5
    assert await snapshot(db, seeded) == before


_SLOW_FUNCTION = """
CREATE OR REPLACE FUNCTION erasure_test_slow() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.tenant_id = TG_ARGV[0] THEN
        PERFORM pg_sleep(0.3);
    END IF;
    RETURN OLD;
END $$
"""


async def test_the_budget_bounds_the_whole_transaction_not_just_each_statement(
    db: Database, seeded: str
):
    # Three deletes of 0.3 s each: every statement fits the 0.5 s statement
    # timeout, their sum does not fit the transaction's bound.
    slow = ["suppression", "variant_assignment", "journey_enrollment"]
    async with db.owner_connection() as con:
        await con.execute(_SLOW_FUNCTION)
        for table in slow:
            await con.execute(
                f'CREATE TRIGGER "erasure_slow_{seeded}" BEFORE DELETE ON "{table}" '
                f"FOR EACH ROW EXECUTE FUNCTION erasure_test_slow('{seeded}')"
            )
    before = await snapshot(db, seeded)
    try:
        command = EraseCommand(seeded, "test", CUSTOMER, dry_run=False, timeout=0.5)
        with pytest.raises(ErasureTimedOut):
            await erase_customer(db, NullSigner(), command)
    finally:
        async with db.owner_connection() as con:
            for table in slow:
                await con.execute(f'DROP TRIGGER "erasure_slow_{seeded}" ON "{table}"')
    assert await snapshot(db, seeded) == before


async def test_an_exhausted_budget_erases_nothing(db: Database, seeded: str):
    before = await snapshot(db, seeded)
    with pytest.raises(ErasureTimedOut):
        await erase_customer(db, NullSigner(), EraseCommand(seeded, "t", CUSTOMER, False, 0.0))
    assert await snapshot(db, seeded) == before


async def test_a_client_deadline_cancels_the_erasure_server_side(
    stub, audit_stub, db: Database, seeded: str
):
    before = await snapshot(db, seeded)
    async with row_locked(db, seeded, "delivery", CUSTOMER):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await erase(stub, seeded, CUSTOMER, timeout=1.0)
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # The lock is gone: a transaction still alive server-side would now go on
    # and delete. Give it the chance, then check it did not.
    await asyncio.sleep(0.5)
    assert await snapshot(db, seeded) == before
    assert await audit_events(audit_stub, seeded, "gdpr_erasure") == []
