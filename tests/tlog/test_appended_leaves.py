"""Leaf hashes made by the append (migration 0242): what the integrator signs.

The append stores each row's leaf hash, made from the content its writer
hashed; the integrator reads those 32 bytes instead of rebuilding each row.
So the tree commits to the rows as appended: a row changed before its
integration is found by verification as surely as one changed after. Rows
written before the migration have no stored hash and are rebuilt from their
columns. An UPDATE keeps a row's leaf hash and subject digest; a row about a
subject cannot be written without its digest.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

import asyncpg
import pytest

from kaireon_server.app import App
from kaireon_server.audit import tlog
from kaireon_server.audit.tlog import Integrator, TlogSettings, leaf_of
from kaireon_server.platform.audit_chain import (
    _APPEND_ALONE,
    _COLUMN_TYPES,
    AuditRow,
    _columns,
    insert_rows,
    redact_subject,
)
from kaireon_server.platform.db import Database
from tests.tlog.forge import drop_leaf_hashes, rehash_chain

# The chain's heads and the leaf cuts among the append's arrays.
HEADS, CUTS = 13, len(_COLUMN_TYPES) - 1


@pytest.fixture
def fresh(quiet_app: tuple[App, TlogSettings]) -> tuple[Database, TlogSettings, str]:
    """The quiet server's database, its log settings and a tenant of the test's own."""
    app, settings = quiet_app
    assert app.db is not None
    return app.db, settings, f"t{secrets.token_hex(4)}"


async def _append(db: Database, tenant: str, n: int) -> None:
    rows = [
        AuditRow(
            "probe",
            "customer",
            f"cust_{i}",
            "test",
            changes={"i": i},
            personal={"email": f"p{i}@example.org"},
            entity_id_is_personal=i % 2 == 0,
            subject_id=f"cust_{i}" if i % 3 else None,
        )
        for i in range(n)
    ]
    async with db.transaction(tenant) as con:
        await insert_rows(con, tenant, rows)


async def _rows(db: Database, tenant: str) -> list[asyncpg.Record]:
    async with db.owner_connection() as con:
        return list(
            await con.fetch("SELECT * FROM audit_log WHERE tenant_id = $1 ORDER BY seq", tenant)
        )


async def _stored_leaves(db: Database, tenant: str) -> list[bytes]:
    async with db.owner_connection() as con:
        rows = await con.fetch(
            "SELECT hash FROM audit_tlog_node WHERE tenant_id = $1 AND level = 0 ORDER BY idx",
            tenant,
        )
    return [bytes(r["hash"]) for r in rows]


async def test_the_integrator_signs_the_leaves_the_appends_stored(
    fresh: tuple[Database, TlogSettings, str],
) -> None:
    db, settings, tenant = fresh
    await _append(db, tenant, 7)
    rows = await _rows(db, tenant)
    assert all(r["leaf_hash"] == leaf_of(r).leaf_hash() for r in rows)
    assert await Integrator(db, settings).integrate(tenant) == 7
    assert await _stored_leaves(db, tenant) == [bytes(r["leaf_hash"]) for r in rows]
    result, _more = await tlog.verify(db, settings, tenant_id=tenant, start=None, end=0)
    assert result.valid and result.rows_checked == 7


async def test_a_row_changed_before_its_integration_is_found(
    fresh: tuple[Database, TlogSettings, str],
) -> None:
    """Before 0242 the integrator hashed the rows as it found them, so a row
    rewritten (its chain rehashed) between its append and the next checkpoint
    was signed as rewritten, and no verification could tell."""
    db, settings, tenant = fresh
    await _append(db, tenant, 5)
    async with db.owner_connection() as con, con.transaction():
        await con.execute(
            "UPDATE audit_log SET changes = '{\"i\": 999}'::jsonb WHERE tenant_id = $1 AND seq = 3",
            tenant,
        )
        await rehash_chain(con, tenant)
    assert await Integrator(db, settings).integrate(tenant) == 5
    result, _more = await tlog.verify(db, settings, tenant_id=tenant, start=None, end=0)
    assert not result.valid
    assert (result.first_invalid_seq, result.reason) == (3, "leaf_mismatch")


async def test_rows_without_a_stored_leaf_hash_are_rebuilt_from_their_columns(
    fresh: tuple[Database, TlogSettings, str],
) -> None:
    """Rows appended before migration 0242 (no leaf hash), mixed with newer ones."""
    db, settings, tenant = fresh
    await _append(db, tenant, 6)
    expected = [bytes(r["leaf_hash"]) for r in await _rows(db, tenant)]
    async with db.owner_connection() as con, con.transaction():
        await drop_leaf_hashes(con, tenant, [1, 2, 5])
    assert [r["leaf_hash"] is None for r in await _rows(db, tenant)] == [
        True, True, False, False, True, False,
    ]  # fmt: skip
    assert await Integrator(db, settings).integrate(tenant) == 6
    assert await _stored_leaves(db, tenant) == expected


async def test_an_update_keeps_the_leaf_hash_and_the_subject_digest(
    fresh: tuple[Database, TlogSettings, str],
) -> None:
    db, _settings, tenant = fresh
    await _append(db, tenant, 2)
    [before] = [r for r in await _rows(db, tenant) if r["subject_id"] == "cust_1"]
    async with db.owner_connection() as con:
        await con.execute(
            "UPDATE audit_log SET leaf_hash = $2, subject_id_digest = $3 WHERE tenant_id = $1",
            tenant,
            bytes(32),
            "0" * 64,
        )
    async with db.transaction(tenant) as con:
        assert await redact_subject(con, tenant, "cust_1") == 1
    [after] = [r for r in await _rows(db, tenant) if r["seq"] == before["seq"]]
    assert after["leaf_hash"] == before["leaf_hash"] == leaf_of(before).leaf_hash()
    assert after["subject_id_digest"] == before["subject_id_digest"]
    assert after["subject_id"] is None and after["subject_id_salt"] is None


async def _insert_by_hand(con: asyncpg.Connection, tenant: str, digest: str | None) -> None:
    """A row about cust_1 inserted as the owner, outside the append, with `digest`."""
    await con.execute(
        "INSERT INTO audit_log (tenant_id, seq, id, action, entity_type, entity_id, actor, "
        "changes, prev_hash, integrity_hash, created_at, subject_id, subject_id_digest) "
        "VALUES ($1, 99, gen_random_uuid(), 'probe', 'customer', 'c', 'test', '{}', '', 'x', "
        "now(), 'cust_1', $2)",
        tenant,
        digest,
    )


async def test_a_row_about_a_subject_needs_its_digest(
    fresh: tuple[Database, TlogSettings, str],
) -> None:
    db, _settings, tenant = fresh
    await _append(db, tenant, 2)
    async with db.owner_connection() as con:
        with pytest.raises(asyncpg.CheckViolationError, match="audit_log_subject_digest_given"):
            await _insert_by_hand(con, tenant, None)


async def test_a_subject_digest_that_is_not_hex_is_refused(
    fresh: tuple[Database, TlogSettings, str],
) -> None:
    """The append writes the digest into the leaf's bytes: only a digest may be there."""
    db, _settings, tenant = fresh
    async with db.owner_connection() as con:
        for digest in ('"', "A" * 64, "0" * 64 + "\n", "0" * 63):
            with pytest.raises(asyncpg.CheckViolationError, match="audit_log_subject_digest_hex"):
                await _insert_by_hand(con, tenant, digest)


def _shift_cut(by: int) -> Callable[[bytes, int], int | None]:
    return lambda _head, cut: cut + by


@pytest.mark.parametrize(
    "bad_cut",
    [
        _shift_cut(1),
        _shift_cut(-1),
        lambda _head, _cut: None,
        lambda _head, _cut: -5,
        lambda head, _cut: len(head),
        lambda head, _cut: len(head) - 12,
    ],
    ids=["one-after", "one-before", "null", "negative", "past-the-head", "inside-prevhash"],
)
async def test_an_append_with_a_cut_it_does_not_understand_writes_nothing(
    fresh: tuple[Database, TlogSettings, str],
    bad_cut: Callable[[bytes, int], int | None],
) -> None:
    """A leaf cut anywhere but where "personalDigests" begins in the head fails
    the whole append (INVALID_PARAMETER_VALUE): no row, the head where it was."""
    db, _settings, tenant = fresh
    await _append(db, tenant, 1)
    rows = [AuditRow("probe", "customer", "c", "test", changes={"n": 1}, subject_id="cust_1")] * 2
    columns, _made = _columns(tenant, rows)
    heads, cuts = columns[HEADS], columns[CUTS]
    columns[CUTS] = [cuts[0], bad_cut(heads[1], cuts[1])]  # the second row's only
    async with db.single_statements() as con:
        with pytest.raises(asyncpg.InvalidParameterValueError, match="no leaf cut"):
            await con.fetch(_APPEND_ALONE, tenant, *columns)
    assert [r["seq"] for r in await _rows(db, tenant)] == [1]
    async with db.owner_connection() as con:
        head = await con.fetchval("SELECT seq FROM audit_chain_head WHERE tenant_id = $1", tenant)
    assert head == 1
