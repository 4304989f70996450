"""StreamDecisionProvenance: many bundles in one call, each the one
GetDecisionProvenance returns, each with its own emission audit row; another
tenant's decisions never appear; bad selections are refused and audit nothing."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import aiohttp
import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from kaireon.provenance.v1 import provenance_pb2, provenance_pb2_grpc
from kaireon_client.verify import verify_bundle
from kaireon_server.app import App
from kaireon_server.platform.db import Database
from tests.provenance.conftest import fetch
from tests.support.server import metadata

DECISIONS = [f"dec_0000{c}_{k}" for c in (1, 2) for k in (1, 2, 3)]


def _stamp(value: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


async def _emitted(db: Database, tenant: str) -> int:
    async with db.transaction(tenant, readonly=True) as con:
        return int(
            await con.fetchval(
                "SELECT count(*) FROM audit_log WHERE action = 'decision_provenance_emit'"
            )
        )


async def _stream(channel, tenant, **fields):  # type: ignore[no-untyped-def]
    stub = provenance_pb2_grpc.ProvenanceServiceStub(channel)
    call = stub.StreamDecisionProvenance(
        provenance_pb2.StreamDecisionProvenanceRequest(**fields), metadata=metadata(tenant)
    )
    return [m async for m in call]


async def test_a_list_streams_each_bundle_with_its_audit_row(channel, seeded, db, signing_key_path):
    public = (signing_key_path.parent / "cosign-test.pub").read_bytes()
    listed = [*DECISIONS, "dec_missing", DECISIONS[0].replace("1_1", "9_9")]
    before = await _emitted(db, seeded)
    got = await _stream(channel, seeded, decision_ids=listed)
    assert [m.decision_id for m in got] == listed  # in the order asked
    assert [m.not_found for m in got] == [False] * len(DECISIONS) + [True, True]
    assert await _emitted(db, seeded) - before == len(DECISIONS)  # one row per bundle
    audit_ids = {m.audit_event_id for m in got if not m.not_found}
    assert len(audit_ids) == len(DECISIONS)
    for message in got[: len(DECISIONS)]:
        # The bundle GetDecisionProvenance gives, and it verifies offline.
        unary = await fetch(channel, seeded, message.decision_id)
        assert message.bundle.data == unary.body
        assert message.digest_sha256 == unary.digest
        report = verify_bundle(
            message.bundle.data,
            digest=message.digest_sha256,
            signature=message.signature,
            public_key_pem=public,
        )
        assert report.ok, report


async def test_a_batch_is_read_in_one_statement_and_served_from_the_store_once_kept(
    channel, seeded, db
):
    """The second stream keeps the bundles (a decision's second emission), all of
    them: its keeps share one transaction, so they do not refuse each other. The
    third reads them back from the store in its one batch statement: the same
    bytes with the kept signatures, a fresh audit row each."""
    listed = [*DECISIONS, "dec_missing"]
    first = await _stream(channel, seeded, decision_ids=listed)
    second = await _stream(channel, seeded, decision_ids=listed)
    async with db.transaction(seeded, readonly=True) as con:
        kept = await con.fetchval(
            "SELECT count(*) FROM provenance_bundle_store WHERE decision_id = ANY($1::text[])",
            DECISIONS,
        )
    assert kept == len(DECISIONS)
    third = await _stream(channel, seeded, decision_ids=listed)
    assert [(m.decision_id, m.not_found, m.bundle.data) for m in third] == [
        (m.decision_id, m.not_found, m.bundle.data) for m in first
    ]
    # The signatures the second stream's builds were kept with (ECDSA signatures of
    # the same bytes differ from one signing to the next).
    assert [m.signature for m in third] == [m.signature for m in second]
    assert [m.signature for m in third][:-1] != [m.signature for m in first][:-1]
    fresh = {m.audit_event_id for m in third if not m.not_found}
    assert len(fresh) == len(DECISIONS) and not fresh & {m.audit_event_id for m in first}


async def test_a_time_range_streams_oldest_first(channel, seeded, db):
    async with db.transaction(seeded, readonly=True) as con:
        rows = await con.fetch("SELECT id, decided_at FROM decision_trace ORDER BY decided_at, id")
    start, end = rows[0]["decided_at"], rows[-1]["decided_at"] + timedelta(microseconds=1)
    got = await _stream(channel, seeded, start_time=_stamp(start), end_time=_stamp(end))
    assert [m.decision_id for m in got] == [r["id"] for r in rows]
    # A bound: the first two only; an empty range: nothing.
    got = await _stream(
        channel, seeded, start_time=_stamp(start), end_time=_stamp(end), max_decisions=2
    )
    assert [m.decision_id for m in got] == [r["id"] for r in rows[:2]]
    later = datetime(2099, 1, 1, tzinfo=UTC)
    assert (
        await _stream(
            channel, seeded, start_time=_stamp(later), end_time=_stamp(later + timedelta(days=1))
        )
        == []
    )


async def test_another_tenants_decisions_never_appear(channel, seeded, db, tenant):
    other = f"{tenant}x"
    got = await _stream(channel, other, decision_ids=DECISIONS[:2])
    assert [m.not_found for m in got] == [True, True]
    assert all(not m.bundle.data for m in got)
    start = datetime(2000, 1, 1, tzinfo=UTC)
    assert (
        await _stream(
            channel,
            other,
            start_time=_stamp(start),
            end_time=_stamp(datetime(2100, 1, 1, tzinfo=UTC)),
        )
        == []
    )


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"decision_ids": ["dec_00001_1", "dec_00001_1"]},
        {"decision_ids": [f"d{i}" for i in range(1001)]},
        {"decision_ids": ["bad\nid"]},
        {"decision_ids": [""]},
        {"decision_ids": ["dec_00001_1"], "max_decisions": 5},
        {"decision_ids": ["dec_00001_1"], "start_time": _stamp(datetime(2026, 1, 1, tzinfo=UTC))},
        {"start_time": _stamp(datetime(2026, 1, 2, tzinfo=UTC))},
        {
            "start_time": _stamp(datetime(2026, 1, 2, tzinfo=UTC)),
            "end_time": _stamp(datetime(2026, 1, 1, tzinfo=UTC)),
        },
        {
            "start_time": _stamp(datetime(2026, 1, 1, tzinfo=UTC)),
            "end_time": _stamp(datetime(2026, 1, 2, tzinfo=UTC)),
            "max_decisions": 10_001,
        },
        {
            "start_time": _stamp(datetime(2026, 1, 1, tzinfo=UTC)),
            "end_time": _stamp(datetime(2026, 1, 2, tzinfo=UTC)),
            "max_decisions": -1,
        },
        # Timestamps outside Timestamp's own range (ToDatetime would fail).
        {"start_time": Timestamp(seconds=0, nanos=-1), "end_time": Timestamp(seconds=10)},
        {"start_time": Timestamp(seconds=0), "end_time": Timestamp(seconds=10**12)},
    ],
)
async def test_bad_selections_are_refused_and_audit_nothing(channel, seeded, db, fields):
    before = await _emitted(db, seeded)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _stream(channel, seeded, **fields)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert await _emitted(db, seeded) == before


async def test_rest_streams_ndjson(app: App, seeded: str):
    url = f"http://127.0.0.1:{app.http_port}/api/v1/provenance:stream"
    headers = {"X-Tenant-Id": seeded, "X-User-Role": "admin", "Content-Type": "application/json"}
    async with aiohttp.ClientSession() as session:
        body = json.dumps({"decisionIds": [*DECISIONS[:3], "dec_missing"]})
        async with session.post(url, data=body, headers=headers) as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("application/x-ndjson")
            lines = [json.loads(line) for line in (await response.read()).splitlines()]
    results = [line["result"] for line in lines]
    assert [r["decisionId"] for r in results] == [*DECISIONS[:3], "dec_missing"]
    assert [r.get("notFound", False) for r in results] == [False, False, False, True]
    assert all(r["digestSha256"] for r in results[:3])


@pytest.mark.parametrize(
    "body",
    [
        '{"decisionIDs": ["dec_00001_1"]}',  # a misspelled field
        '{"decisionIds": ["dec_00001_1"], "decisionIds": ["dec_00001_2"]}',  # twice
        '{"startTime": "2026-01-01T00:00:00Z", "endTime": "2026-01-02T00:00:00Z", '
        '"maxDecisions": NaN}',
        '{"startTime": "2026-01-01T00:00:00Z", "endTime": "2026-01-02T00:00:00Z", '
        '"maxDecisions": 1e400}',
        '{"decisionIds": "dec_00001_1"}',  # not a list
    ],
)
async def test_rest_refuses_what_it_does_not_understand(app: App, seeded: str, db, body: str):
    before = await _emitted(db, seeded)
    url = f"http://127.0.0.1:{app.http_port}/api/v1/provenance:stream"
    headers = {"X-Tenant-Id": seeded, "X-User-Role": "admin", "Content-Type": "application/json"}
    async with aiohttp.ClientSession() as session:
        async with session.post(url, data=body, headers=headers) as response:
            assert response.status == 400, await response.text()
    assert await _emitted(db, seeded) == before


async def test_a_client_that_hangs_up_leaves_at_most_one_batch_audited(channel, db, tenant):
    """The next batch is read while one is audited and sent, but audited only
    once it is its turn: a client that cancels after its first bundle leaves
    that batch audited, never more, and the server streams on for the next caller."""
    from kaireon_server.demo.seed import SeedSize, seed_tenant
    from kaireon_server.provenance.bulk import BATCH

    await seed_tenant(db, tenant, SeedSize(customers=60, interactions_per_customer=1))
    listed = [f"dec_{c:05d}_{k}" for c in range(1, 61) for k in (1, 2, 3)]
    assert len(listed) > 2 * BATCH  # a batch is sent, one is read ahead, one is left
    stub = provenance_pb2_grpc.ProvenanceServiceStub(channel)
    call = stub.StreamDecisionProvenance(
        provenance_pb2.StreamDecisionProvenanceRequest(decision_ids=listed),
        metadata=metadata(tenant),
    )
    first = await call.read()
    assert first.decision_id == listed[0] and not first.not_found
    call.cancel()
    # Rows of a batch in flight are shielded: wait until the count settles.
    counts = [await _emitted(db, tenant)]
    while len(counts) < 3 or counts[-1] != counts[-3]:
        await asyncio.sleep(0.1)
        counts.append(await _emitted(db, tenant))
    assert counts[-1] == BATCH
    again = await _stream(channel, tenant, decision_ids=listed[:3])
    assert [m.not_found for m in again] == [False] * 3
