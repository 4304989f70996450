"""The audit chain: concurrent appends never fork it; tampering is found at the right row,
by VerifyChain and by `kaireon verify audit` offline; redaction keeps it verifiable."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import asyncpg
import pytest
from google.protobuf import json_format
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from kaireon.audit.v1 import audit_pb2, audit_pb2_grpc
from kaireon_client.audit_chain import integrity_hash, personal_digest
from kaireon_client.canonical import format_timestamp
from kaireon_server.audit.tlog import leaf_of
from kaireon_server.platform.audit_chain import (
    AuditRow,
    append_audit,
    append_audit_at_commit,
    insert_rows,
    redact_subject,
)
from tests.support.server import ROOT, metadata

KAIREON = str(Path(sys.executable).parent / "kaireon")


async def _append_many(db, tenant: str, n: int) -> None:
    async def one(i: int) -> None:
        async with db.transaction(tenant) as con:
            await append_audit(
                con,
                tenant,
                action="test_event",
                entity_type="customer",
                entity_id=f"cust_{i:03d}",
                actor="test",
                changes={"i": i},
                personal={"email": f"p{i}@example.com"},
                entity_id_is_personal=True,
                subject_id=f"cust_{i:03d}",
            )

    await asyncio.gather(*(one(i) for i in range(n)))


async def _verify(channel, tenant):
    stub = audit_pb2_grpc.AuditServiceStub(channel)
    return await stub.VerifyChain(audit_pb2.VerifyChainRequest(), metadata=metadata(tenant))


async def _dump(channel, tenant) -> dict:
    stub = audit_pb2_grpc.AuditServiceStub(channel)
    events, token = [], ""
    while True:
        page = await stub.ListAuditEvents(
            audit_pb2.ListAuditEventsRequest(page_size=7, page_token=token),
            metadata=metadata(tenant),
        )
        events.extend(json_format.MessageToDict(e) for e in page.events)
        token = page.next_page_token
        if not token:
            return {"events": events}


def _offline(tmp_path: Path, dump: dict) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "audit.json"
    path.write_text(json.dumps(dump))
    return subprocess.run(
        [KAIREON, "verify", "audit", str(path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )


@settings(max_examples=300, deadline=None)
@given(
    moment=st.datetimes(
        min_value=datetime(1, 1, 2),
        max_value=datetime(9999, 12, 30),
        timezones=st.sampled_from(
            [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-11))]
        ),
    )
)
def test_the_hashed_timestamp_is_strftimes_text(moment: datetime) -> None:
    """format_timestamp's fast form (every audit row, twice) writes what
    `strftime` wrote into every row hashed so far, in any zone and any year."""
    expected = moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert format_timestamp(moment) == expected


def test_a_naive_timestamp_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        format_timestamp(datetime(2026, 12, 6))


async def test_concurrent_appends_form_one_chain(db, channel, tenant, tmp_path) -> None:
    await _append_many(db, tenant, 50)
    result = await _verify(channel, tenant)
    assert result.valid, result
    assert result.rows_checked == 50
    async with db.transaction(tenant) as con:
        seqs = [
            r["seq"]
            for r in await con.fetch(
                "SELECT seq FROM audit_log WHERE tenant_id = $1 ORDER BY seq", tenant
            )
        ]
    assert seqs == list(range(1, 51))
    dump = await _dump(channel, tenant)
    assert len(dump["events"]) == 50
    offline = _offline(tmp_path, dump)
    assert offline.returncode == 0, offline.stdout + offline.stderr
    assert "50 rows" in offline.stdout


@pytest.mark.parametrize("tamper", ["edit_changes", "delete_row", "reorder", "edit_personal"])
async def test_tampering_is_detected_at_that_row(db, channel, tenant, tmp_path, tamper) -> None:
    await _append_many(db, tenant, 8)
    dump_before = await _dump(channel, tenant)
    async with db.owner_connection() as con:
        if tamper == "edit_changes":
            await con.execute(
                "UPDATE audit_log SET changes = '{\"i\": 999}' WHERE tenant_id = $1 AND seq = 4",
                tenant,
            )
            expected_seq, reason = 4, "integrity_hash_mismatch"
        elif tamper == "delete_row":
            await con.execute("DELETE FROM audit_log WHERE tenant_id = $1 AND seq = 4", tenant)
            expected_seq, reason = 4, "sequence_gap"
        elif tamper == "reorder":
            # Swap rows 4 and 5: their links no longer match their positions.
            for old, new in ((4, -4), (5, 4), (-4, 5)):
                await con.execute(
                    "UPDATE audit_log SET seq = $3 WHERE tenant_id = $1 AND seq = $2",
                    tenant,
                    old,
                    new,
                )
            expected_seq, reason = 4, "prev_hash_mismatch"
        else:
            await con.execute(
                'UPDATE audit_log SET personal = \'{"email": "x@evil.test"}\' '
                "WHERE tenant_id = $1 AND seq = 4",
                tenant,
            )
            expected_seq, reason = 4, "integrity_hash_mismatch"
    result = await _verify(channel, tenant)
    assert not result.valid
    assert result.first_invalid_seq == expected_seq
    assert result.reason == reason

    if tamper == "edit_personal":
        return  # salts are not in the dump; the offline tool checks hashed content
    offline = _offline(tmp_path, await _dump(channel, tenant))
    assert offline.returncode == 1
    assert f"seq {expected_seq}" in offline.stdout and reason in offline.stdout
    # The untampered dump still verifies offline.
    assert _offline(tmp_path, dump_before).returncode == 0


async def test_deleting_the_last_row_is_detected(db, channel, tenant) -> None:
    await _append_many(db, tenant, 3)
    async with db.owner_connection() as con:
        await con.execute("DELETE FROM audit_log WHERE tenant_id = $1 AND seq = 3", tenant)
    result = await _verify(channel, tenant)
    assert not result.valid and result.first_invalid_seq == 3 and result.reason == "sequence_gap"


async def test_redaction_removes_personal_values_and_chain_still_verifies(
    db, channel, tenant, tmp_path
) -> None:
    await _append_many(db, tenant, 5)
    async with db.transaction(tenant) as con:
        redacted = await redact_subject(con, tenant, "cust_002")
    assert redacted == 1
    dump = await _dump(channel, tenant)
    row = next(e for e in dump["events"] if e.get("redacted"))
    assert "entityId" not in row and "email" not in row.get("changes", {})
    assert "p2@example.com" not in json.dumps(dump) and "cust_002" not in json.dumps(dump)
    assert (await _verify(channel, tenant)).valid
    assert _offline(tmp_path, dump).returncode == 0


async def test_chain_is_per_tenant(db, channel, tenant) -> None:
    other = tenant + "x"
    await _append_many(db, tenant, 3)
    await _append_many(db, other, 2)
    assert (await _verify(channel, tenant)).rows_checked == 3
    assert (await _verify(channel, other)).rows_checked == 2
    events = (await _dump(channel, other))["events"]
    assert {e["tenantId"] for e in events} == {other}


async def test_append_outside_transaction_is_refused(db, tenant) -> None:
    async with db.connection() as con:
        with pytest.raises(RuntimeError):
            await append_audit(con, tenant, action="x", entity_type="y", entity_id="z", actor="t")


TEXT = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12
)
# Keys the chain's and the leaf's own members are named by, so a row's content
# holds the marks the writer splits at (platform/audit_chain.py _CHAIN_MARK,
# _DIGESTS_MARK) inside its values.
NASTY = (
    "prevHash",
    "seq",
    "tenantId",
    ',"prevHash":"","seq":0,"tenantId":',
    "personalDigests",
    ',"personalDigests":{',
    "leafVersion",
    "subjectIdDigest",
)
VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | TEXT,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(NASTY) | TEXT, inner, max_size=3)
    ),
    max_leaves=12,
)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
# A member of `changes` shaped like the leaf's mark, after another one.
@example(
    changes={"a": 1, "personalDigests": {"b": "c"}},
    personal={"e": "f"},
    entity_id="x",
    personal_entity=False,
    about_subject=True,
)
@given(
    changes=st.dictionaries(st.sampled_from(NASTY) | TEXT, VALUES, max_size=4),
    personal=st.dictionaries(st.sampled_from(NASTY) | TEXT, VALUES, max_size=3),
    entity_id=TEXT.filter(bool),
    personal_entity=st.booleans(),
    about_subject=st.booleans(),
)
async def test_rows_chained_in_sql_hash_as_the_client_hashes_them(
    db, tenant, changes, personal, entity_id, personal_entity, about_subject
) -> None:
    """The writer chains rows in PostgreSQL from content made in Python
    (migration 0231) and hashes their leaves there too (0242); the client's
    integrity_hash and AuditLeaf, which auditors run, give the same hashes for
    every row, whatever the content holds."""
    personal = {k: v for k, v in personal.items() if k not in changes}
    async with db.transaction(tenant) as con:
        records = await insert_rows(
            con,
            tenant,
            [
                AuditRow(
                    "test_event",
                    "customer",
                    entity_id,
                    "test",
                    changes=changes,
                    personal=personal,
                    entity_id_is_personal=personal_entity,
                    subject_id=entity_id if about_subject else None,
                ),
                AuditRow("test_event", "customer", "second", "test", changes={"after": changes}),
            ],
        )
    async with db.transaction(tenant, readonly=True) as con:
        rows = await con.fetch(
            "SELECT * FROM audit_log WHERE tenant_id = $1 AND seq = ANY($2::bigint[]) ORDER BY seq",
            tenant,
            [r.seq for r in records],
        )
    assert [r["seq"] for r in rows] == [r.seq for r in records]
    assert records[1].prev_hash == records[0].integrity_hash
    for row, record in zip(rows, records, strict=True):
        content = {
            "tenantId": tenant,
            "seq": row["seq"],
            "id": str(row["id"]),
            "action": row["action"],
            "entityType": row["entity_type"],
            "entityId": row["entity_id"],
            "entityIdDigest": row["entity_id_digest"],
            "actor": row["actor"],
            "changes": row["changes"],
            "personalDigests": row["personal_digests"],
            "timestamp": format_timestamp(row["created_at"]),
            "prevHash": row["prev_hash"],
        }
        assert row["integrity_hash"] == record.integrity_hash == integrity_hash(content)
        assert row["prev_hash"] == record.prev_hash
        assert row["leaf_hash"] == leaf_of(row).leaf_hash()
        if row["subject_id"] is None:
            assert row["subject_id_digest"] is None and row["subject_id_salt"] is None
        else:
            assert row["subject_id_digest"] == personal_digest(
                row["subject_id_salt"], row["subject_id"]
            )


def _row(i: int, **extra) -> AuditRow:  # type: ignore[no-untyped-def]
    return AuditRow(
        "test_event",
        "customer",
        f"cust_{i:03d}",
        "test",
        changes={"i": i},
        personal={"email": f"p{i}@example.com"},
        entity_id_is_personal=True,
        subject_id=f"cust_{i:03d}",
        **extra,
    )


async def _pending(db, tenant: str) -> int:
    async with db.transaction(tenant, readonly=True) as con:
        return int(await con.fetchval("SELECT count(*) FROM audit_pending"))


async def test_rows_appended_at_commit_are_chained_by_the_commit(db, channel, tenant) -> None:
    """append_audit_at_commit (migration 0234) writes no chain row and holds no
    lock before COMMIT; the COMMIT chains the transaction's rows in the order
    written, and they verify as every other row (offline too)."""
    async with db.transaction(tenant) as con:
        ids = [await append_audit_at_commit(con, tenant, _row(i)) for i in range(3)]
        assert (
            await con.fetchval("SELECT count(*) FROM audit_log WHERE tenant_id = $1", tenant) == 0
        )
    assert await _pending(db, tenant) == 0
    async with db.transaction(tenant, readonly=True) as con:
        rows = await con.fetch(
            "SELECT id::text, seq FROM audit_log WHERE tenant_id = $1 ORDER BY seq", tenant
        )
    assert [(r["id"], r["seq"]) for r in rows] == [(i, n) for n, i in enumerate(ids, start=1)]
    result = await _verify(channel, tenant)
    assert result.valid and result.rows_checked == 3, result


async def test_a_rollback_leaves_no_row_and_the_head_where_it_was(db, channel, tenant) -> None:
    await _append_many(db, tenant, 2)
    with pytest.raises(RuntimeError, match="changed my mind"):
        async with db.transaction(tenant) as con:
            await append_audit_at_commit(con, tenant, _row(7))
            raise RuntimeError("changed my mind")
    assert await _pending(db, tenant) == 0
    result = await _verify(channel, tenant)
    assert result.valid and result.rows_checked == 2, result


async def test_an_open_transaction_with_a_row_at_commit_blocks_no_other_append(
    db, channel, tenant
) -> None:
    """The point of it: an immediate append (which locks the chain head) would
    make every other writer of the tenant wait until this transaction ends."""
    async with db.transaction(tenant) as slow:
        await append_audit_at_commit(slow, tenant, _row(1))
        # Another writer, immediate and at commit, while `slow` is still open.
        async with asyncio.timeout(10):
            await _append_many(db, tenant, 3)
            async with db.transaction(tenant) as con:
                await append_audit_at_commit(con, tenant, _row(2))
    async with db.transaction(tenant, readonly=True) as con:
        entities = [
            r["changes"]["i"]
            for r in await con.fetch(
                "SELECT changes FROM audit_log WHERE tenant_id = $1 ORDER BY seq", tenant
            )
        ]
    # Chained in commit order: the open transaction's row last.
    assert sorted(entities[:4]) == [0, 1, 2, 2] and entities[4] == 1
    result = await _verify(channel, tenant)
    assert result.valid and result.rows_checked == 5, result


async def test_concurrent_rows_at_commit_and_immediate_form_one_chain(db, channel, tenant) -> None:
    async def at_commit(i: int) -> None:
        async with db.transaction(tenant) as con:
            await append_audit_at_commit(con, tenant, _row(100 + i))
            await append_audit_at_commit(con, tenant, _row(200 + i))

    await asyncio.gather(_append_many(db, tenant, 20), *(at_commit(i) for i in range(20)))
    result = await _verify(channel, tenant)
    assert result.valid and result.rows_checked == 60, result
    assert await _pending(db, tenant) == 0


async def test_rows_at_commit_are_chained_under_their_own_tenant(db, channel, tenant) -> None:
    """A transaction that set another tenant after writing its row (the
    policies then hide the row from that tenant) still has it chained."""
    other = tenant + "x"
    async with db.transaction(tenant) as con:
        await append_audit_at_commit(con, tenant, _row(1))
        await con.execute("SELECT set_config('kaireon.tenant_id', $1, true)", other)
    assert await _pending(db, tenant) == 0
    result = await _verify(channel, tenant)
    assert result.valid and result.rows_checked == 1, result


async def test_a_row_at_commit_outside_a_transaction_is_refused(db, tenant) -> None:
    async with db.connection() as con:
        with pytest.raises(RuntimeError):
            await append_audit_at_commit(con, tenant, _row(1))
    assert await _pending(db, tenant) == 0


async def test_a_row_that_cannot_be_chained_fails_the_commit_and_keeps_nothing(
    db, channel, tenant
) -> None:
    """A second pending row with the first's id breaks audit_log's unique id
    when the COMMIT chains them: the COMMIT fails, and nothing of the
    transaction (its rows, the other write) is kept."""
    await _append_many(db, tenant, 1)
    with pytest.raises(asyncpg.UniqueViolationError):
        async with db.transaction(tenant) as con:
            await append_audit_at_commit(con, tenant, _row(5))
            await con.execute(
                "INSERT INTO audit_pending (tenant_id, id, action, entity_type, entity_id, "
                "actor, changes, personal_digests, created_at, head, tail, leaf_cut) "
                "SELECT tenant_id, id, action, entity_type, entity_id, actor, changes, "
                "personal_digests, created_at, head, tail, leaf_cut FROM audit_pending"
            )
            await append_audit_at_commit(con, tenant, _row(6))
    assert await _pending(db, tenant) == 0
    result = await _verify(channel, tenant)
    assert result.valid and result.rows_checked == 1, result
