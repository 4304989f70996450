"""The request lifecycle through the real gRPC server: transitions, audit rows,
deadlines, execution through the DSAR and erasure use cases."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from kaireon.dsar.v1 import dsar_pb2, dsar_pb2_grpc
from kaireon.erasure.v1 import erasure_pb2, erasure_pb2_grpc
from kaireon.requests.v1 import requests_pb2
from tests.dsar.conftest import wait_done
from tests.erasure.support import error_reason
from tests.requests.conftest import audit_rows, create, verify
from tests.support.server import metadata

PENDING = requests_pb2.VERIFICATION_RESULT_PENDING
FAILED = requests_pb2.VERIFICATION_RESULT_FAILED


def _ts(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


async def _fails(call, code: grpc.StatusCode, reason: str = "") -> grpc.aio.AioRpcError:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == code, caught.value.details()
    if reason:
        assert error_reason(caught.value) == reason
    return caught.value


async def test_create_computes_the_gdpr_due_date_from_a_month_end_receipt(stub, tenant, db):
    received = datetime(2026, 1, 31, 10, 0, tzinfo=UTC)
    if received < datetime.now(UTC) - timedelta(days=3 * 366):  # pragma: no cover - far future
        pytest.skip("receipt too old for the input rule")
    r = await create(stub, tenant, receive_time=_ts(received))
    assert (r.state, r.origin, r.regulation) == ("received", "lifecycle", "gdpr")
    assert r.due_date == "2026-02-28"
    today = datetime.now(UTC).date()
    assert r.days_left == (date(2026, 2, 28) - today).days
    assert r.overdue == (today > date(2026, 2, 28))
    rows = await audit_rows(db, tenant, r.id)
    assert [x["action"] for x in rows] == ["subject_request_received"]
    assert rows[0]["actor"] == "operator@headers" and rows[0]["subject_id"] == "cust_00001"
    assert rows[0]["changes"]["to"] == "received" and rows[0]["changes"]["dueDate"] == "2026-02-28"


@pytest.mark.parametrize(("regulation", "days"), [("ccpa", 45), ("lgpd", 15)])
async def test_day_based_regulations(stub, tenant, regulation, days):
    r = await create(stub, tenant, regulation=regulation)
    today = datetime.now(UTC).date()
    assert r.due_date == (today + timedelta(days=days)).isoformat()
    assert r.days_left == days and not r.overdue


async def test_bad_input_is_refused_and_nothing_is_written(stub, tenant, db):
    future = _ts(datetime.now(UTC) + timedelta(days=2))
    for request, field in [
        (requests_pb2.CreateRequestRequest(kind="x", subject_id="c", regulation="gdpr"), "kind"),
        (
            requests_pb2.CreateRequestRequest(kind="access", subject_id="", regulation="gdpr"),
            "subject_id",
        ),
        (
            requests_pb2.CreateRequestRequest(kind="access", subject_id="c", regulation="hipaa"),
            "regulation",
        ),
        (
            requests_pb2.CreateRequestRequest(
                kind="access", subject_id="c", regulation="gdpr", receive_time=future
            ),
            "receive_time",
        ),
    ]:
        error = await _fails(
            stub.CreateRequest(request, metadata=metadata(tenant, "operator")),
            grpc.StatusCode.INVALID_ARGUMENT,
        )
        assert field in error.details()
    await _fails(
        stub.GetRequest(requests_pb2.GetRequestRequest(id="nope"), metadata=metadata(tenant)),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    async with db.transaction(tenant, readonly=True) as con:
        assert await con.fetchval("SELECT count(*) FROM subject_request") == 0
        assert await con.fetchval("SELECT count(*) FROM audit_log") == 0


async def test_other_spellings_of_an_id_are_refused_and_change_nothing(stub, tenant, db):
    r = await create(stub, tenant)
    undashed = r.id.replace("-", "")
    async with db.transaction(tenant, readonly=True) as con:
        audits = await con.fetchval("SELECT count(*) FROM audit_log")
    for spelling in [f"{{{r.id}}}", f"urn:uuid:{r.id}", undashed, f"{r.id}\n", f" {r.id}"]:
        await _fails(
            stub.GetRequest(requests_pb2.GetRequestRequest(id=spelling), metadata=metadata(tenant)),
            grpc.StatusCode.INVALID_ARGUMENT,
        )
        await _fails(
            stub.CancelRequest(
                requests_pb2.CancelRequestRequest(id=spelling, reason="r"),
                metadata=metadata(tenant),
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
        )
        error = await _fails(
            stub.WaiveDelivery(
                requests_pb2.WaiveDeliveryRequest(
                    request_id=r.id, processor_id=f"{{{r.id}}}", reason="r"
                ),
                metadata=metadata(tenant, "admin"),
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
        )
        assert "processor_id" in error.details()
    found = await stub.GetRequest(
        requests_pb2.GetRequestRequest(id=r.id), metadata=metadata(tenant)
    )
    assert found.request.state == r.state
    async with db.transaction(tenant, readonly=True) as con:
        assert await con.fetchval("SELECT count(*) FROM audit_log") == audits


async def test_illegal_transitions_fail_and_change_nothing(stub, tenant, db):
    r = await create(stub, tenant)
    md = metadata(tenant)
    # Resume without a pause; approve before verification (GDPR requires it).
    await _fails(
        stub.ResumeRequest(requests_pb2.ResumeRequestRequest(id=r.id), metadata=md),
        grpc.StatusCode.FAILED_PRECONDITION,
        "ILLEGAL_TRANSITION",
    )
    await _fails(
        stub.ApproveRequest(requests_pb2.ApproveRequestRequest(id=r.id), metadata=md),
        grpc.StatusCode.FAILED_PRECONDITION,
        "VERIFICATION_REQUIRED",
    )
    cancelled = await stub.CancelRequest(
        requests_pb2.CancelRequestRequest(id=r.id, reason="withdrawn by the subject"), metadata=md
    )
    assert cancelled.request.state == "cancelled"
    before = await audit_rows(db, tenant, r.id)
    for call in (
        stub.DenyRequest(requests_pb2.DenyRequestRequest(id=r.id, reason="late"), metadata=md),
        stub.PauseRequest(requests_pb2.PauseRequestRequest(id=r.id, reason="x"), metadata=md),
        stub.ExtendRequest(requests_pb2.ExtendRequestRequest(id=r.id, reason="x"), metadata=md),
        stub.VerifyIdentity(
            requests_pb2.VerifyIdentityRequest(
                id=r.id,
                method="m",
                evidence_reference="e",
                result=requests_pb2.VERIFICATION_RESULT_VERIFIED,
            ),
            metadata=md,
        ),
        stub.ApproveRequest(requests_pb2.ApproveRequestRequest(id=r.id), metadata=md),
    ):
        await _fails(call, grpc.StatusCode.FAILED_PRECONDITION, "ILLEGAL_TRANSITION")
    assert await audit_rows(db, tenant, r.id) == before
    got = await stub.GetRequest(requests_pb2.GetRequestRequest(id=r.id), metadata=md)
    assert got.request.state == "cancelled"
    # A reason is required; an unknown id is NOT_FOUND.
    await _fails(
        stub.DenyRequest(requests_pb2.DenyRequestRequest(id=r.id), metadata=md),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    await _fails(
        stub.GetRequest(
            requests_pb2.GetRequestRequest(id="00000000-0000-4000-8000-000000000000"), metadata=md
        ),
        grpc.StatusCode.NOT_FOUND,
        "SUBJECT_REQUEST_NOT_FOUND",
    )


async def test_verification_steps_and_failure_denies(stub, tenant, db):
    r = await create(stub, tenant)
    pending = await verify(stub, tenant, r.id, PENDING)
    assert pending.state == "identity_verification"
    assert (pending.verification_method, pending.verification_reference) == (
        "email_link",
        "TICKET-77",
    )
    failed = await verify(stub, tenant, r.id, FAILED)
    assert failed.state == "denied"
    rows = await audit_rows(db, tenant, r.id)
    assert [x["action"] for x in rows] == [
        "subject_request_received",
        "subject_request_verification_pending",
        "subject_request_verification_failed",
    ]
    # The method in clear, the evidence reference as a personal value; never evidence.
    assert rows[1]["changes"]["method"] == "email_link"
    assert rows[1]["changes"]["from"] == "received"
    assert rows[2]["changes"]["to"] == "denied"


async def test_pause_and_resume_move_the_due_date(stub, tenant, db):
    r = await create(stub, tenant, regulation="ccpa")
    md = metadata(tenant, "operator")
    paused = await stub.PauseRequest(
        requests_pb2.PauseRequestRequest(
            id=r.id, reason="asked for the account email", requires_input=True
        ),
        metadata=md,
    )
    assert paused.request.state == "requires_input" and paused.request.due_date == r.due_date
    # Three days stopped (the pause is moved back in the database: the real clock
    # would need three days).
    async with db.transaction(tenant) as con:
        await con.execute(
            "UPDATE subject_request SET paused_at = paused_at - interval '3 days' WHERE id = $1::uuid",
            r.id,
        )
    shown = await stub.GetRequest(requests_pb2.GetRequestRequest(id=r.id), metadata=md)
    due = date.fromisoformat(r.due_date)
    assert shown.request.due_date == (due + timedelta(days=3)).isoformat()
    assert shown.request.days_left == r.days_left + 3 and not shown.request.overdue
    resumed = await stub.ResumeRequest(
        requests_pb2.ResumeRequestRequest(id=r.id, reason="email received"), metadata=md
    )
    assert resumed.request.state == "received"
    assert resumed.request.paused_days == 3
    assert resumed.request.due_date == (due + timedelta(days=3)).isoformat()
    rows = await audit_rows(db, tenant, r.id)
    assert [x["action"] for x in rows][-2:] == ["subject_request_paused", "subject_request_resumed"]
    assert rows[-1]["changes"]["pausedDays"] == 3
    assert rows[-1]["changes"]["dueDate"] == resumed.request.due_date
    assert rows[-2]["actor"] == "operator@headers" and rows[-2]["changes"]["to"] == "requires_input"


async def test_extensions_within_the_policy_limit(stub, tenant, db):
    received = datetime(2026, 1, 31, 9, 0, tzinfo=UTC)
    r = await create(stub, tenant, receive_time=_ts(received))
    md = metadata(tenant, "operator")
    one = await stub.ExtendRequest(
        requests_pb2.ExtendRequestRequest(id=r.id, reason="complex", months=1), metadata=md
    )
    assert one.request.due_date == "2026-03-31"
    await _fails(
        stub.ExtendRequest(
            requests_pb2.ExtendRequestRequest(id=r.id, reason="more", months=2), metadata=md
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "EXTENSION_LIMIT",
    )
    await _fails(
        stub.ExtendRequest(
            requests_pb2.ExtendRequestRequest(id=r.id, reason="days", days=5), metadata=md
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    rest = await stub.ExtendRequest(
        requests_pb2.ExtendRequestRequest(id=r.id, reason="many requests"), metadata=md
    )
    assert rest.request.due_date == "2026-04-30"  # 31 Jan + 3 months, from receipt
    rows = await audit_rows(db, tenant, r.id)
    assert [x["changes"].get("added") for x in rows if x["action"].endswith("extended")] == [1, 1]
    # LGPD allows none.
    lgpd = await create(stub, tenant, regulation="lgpd")
    await _fails(
        stub.ExtendRequest(requests_pb2.ExtendRequestRequest(id=lgpd.id, reason="x"), metadata=md),
        grpc.StatusCode.FAILED_PRECONDITION,
        "EXTENSION_LIMIT",
    )


async def test_approving_an_access_request_runs_the_dsar_export(stub, channel, seeded, db):
    dsar = dsar_pb2_grpc.DsarServiceStub(channel)
    r = await create(stub, seeded)
    await verify(stub, seeded, r.id)
    approved = await stub.ApproveRequest(
        requests_pb2.ApproveRequestRequest(id=r.id, reason="identity checked"),
        metadata=metadata(seeded, "admin"),
    )
    assert approved.request.state == "in_progress" and approved.request.dsar_request_id
    done = await wait_done(dsar, seeded, approved.request.dsar_request_id)
    assert done.status == "completed"
    got = await stub.GetRequest(
        requests_pb2.GetRequestRequest(id=r.id), metadata=metadata(seeded, "operator")
    )
    assert got.request.state == "completed"
    rows = await audit_rows(db, seeded, r.id)
    assert [x["action"] for x in rows] == [
        "subject_request_received",
        "subject_request_verified",
        "subject_request_approved",
    ]
    assert rows[-1]["actor"] == "admin@headers"
    assert rows[-1]["changes"]["dsarRequestId"] == approved.request.dsar_request_id
    # Approval needs the admin role.
    other = await create(stub, seeded)
    await verify(stub, seeded, other.id)
    await _fails(
        stub.ApproveRequest(
            requests_pb2.ApproveRequestRequest(id=other.id), metadata=metadata(seeded, "operator")
        ),
        grpc.StatusCode.PERMISSION_DENIED,
    )


async def test_approving_an_erasure_erases_in_the_same_transaction(stub, channel, seeded, db):
    r = await create(stub, seeded, kind="erasure", subject="cust_00002")
    await verify(stub, seeded, r.id)
    async with db.transaction(seeded, readonly=True) as con:
        before = await con.fetchval(
            "SELECT count(*) FROM interaction_history WHERE customer_id = 'cust_00002'"
        )
    assert before > 0
    approved = await stub.ApproveRequest(
        requests_pb2.ApproveRequestRequest(id=r.id), metadata=metadata(seeded, "admin")
    )
    assert approved.request.state == "completed"
    async with db.transaction(seeded, readonly=True) as con:
        assert (
            await con.fetchval(
                "SELECT count(*) FROM interaction_history WHERE customer_id = 'cust_00002'"
            )
            == 0
        )
        erasure_id = await con.fetchval(
            "SELECT id::text FROM audit_log WHERE action = 'gdpr_erasure' AND entity_id = 'cust_00002'"
        )
    rows = await audit_rows(db, seeded, r.id)
    assert rows[-1]["action"] == "subject_request_approved"
    assert rows[-1]["changes"]["erasureAuditId"] == erasure_id
    # Earlier rows about the subject were redacted by the erasure; the approval names none.
    assert all(x["subject_id"] is None for x in rows)
    await _fails(
        stub.ApproveRequest(
            requests_pb2.ApproveRequestRequest(id=r.id), metadata=metadata(seeded, "admin")
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "ILLEGAL_TRANSITION",
    )


async def test_a_legal_hold_refuses_the_approval_and_nothing_changes(stub, channel, seeded, db):
    erasure = erasure_pb2_grpc.ErasureServiceStub(channel)
    await erasure.SetLegalHold(
        erasure_pb2.SetLegalHoldRequest(customer_id="cust_00003", reason="CASE-1"),
        metadata=metadata(seeded),
    )
    r = await create(stub, seeded, kind="erasure", subject="cust_00003")
    await verify(stub, seeded, r.id)
    await _fails(
        stub.ApproveRequest(
            requests_pb2.ApproveRequestRequest(id=r.id), metadata=metadata(seeded, "admin")
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "LEGAL_HOLD",
    )
    got = await stub.GetRequest(requests_pb2.GetRequestRequest(id=r.id), metadata=metadata(seeded))
    assert got.request.state == "awaiting_approval"


async def test_direct_calls_appear_as_pre_approved_requests(stub, channel, seeded):
    erasure = erasure_pb2_grpc.ErasureServiceStub(channel)
    dsar = dsar_pb2_grpc.DsarServiceStub(channel)
    await erasure.EraseCustomer(
        erasure_pb2.EraseCustomerRequest(customer_id="cust_00001", dry_run=True),
        metadata=metadata(seeded),
    )
    listed = await stub.ListRequests(requests_pb2.ListRequestsRequest(), metadata=metadata(seeded))
    assert list(listed.requests) == []  # a preview is not a request
    await erasure.EraseCustomer(
        erasure_pb2.EraseCustomerRequest(customer_id="cust_00001"), metadata=metadata(seeded)
    )
    created = await dsar.CreateDsarRequest(
        dsar_pb2.CreateDsarRequestRequest(
            request_type="export", subject_id="cust_00002", idempotency_key="k1"
        ),
        metadata=metadata(seeded, "operator"),
    )
    # A retry with the same key is the same request, not a second one.
    await dsar.CreateDsarRequest(
        dsar_pb2.CreateDsarRequestRequest(
            request_type="export", subject_id="cust_00002", idempotency_key="k1"
        ),
        metadata=metadata(seeded, "operator"),
    )
    await wait_done(dsar, seeded, created.request.id)
    listed = await stub.ListRequests(requests_pb2.ListRequestsRequest(), metadata=metadata(seeded))
    by_kind = {r.kind: r for r in listed.requests}
    assert len(listed.requests) == 2
    assert by_kind["erasure"].origin == "direct" and by_kind["erasure"].state == "completed"
    assert by_kind["erasure"].subject_id == "cust_00001"
    assert by_kind["access"].dsar_request_id == created.request.id
    assert by_kind["access"].state == "completed"  # the export completed it


async def test_tenant_policy_overrides_change_new_due_dates(stub, tenant):
    md = metadata(tenant)
    policies = await stub.ListRequestPolicies(
        requests_pb2.ListRequestPoliciesRequest(), metadata=md
    )
    assert [p.regulation for p in policies.policies] == ["gdpr", "uk_gdpr", "ccpa", "lgpd"]
    assert not any(p.overridden for p in policies.policies)
    await stub.SetRequestPolicy(
        requests_pb2.SetRequestPolicyRequest(
            policy=requests_pb2.RequestPolicy(
                regulation="ccpa", period_days=30, max_extension_days=10, require_verification=False
            )
        ),
        metadata=md,
    )
    r = await create(stub, tenant, regulation="ccpa")
    assert r.days_left == 30
    # No verification required by this tenant's policy: approval from "received".
    approved = await stub.ApproveRequest(requests_pb2.ApproveRequestRequest(id=r.id), metadata=md)
    assert approved.request.state == "in_progress"
    await _fails(
        stub.SetRequestPolicy(
            requests_pb2.SetRequestPolicyRequest(
                policy=requests_pb2.RequestPolicy(regulation="gdpr", period_months=1, period_days=3)
            ),
            metadata=md,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )


async def test_lists_filter_by_state_due_date_and_overdue(stub, tenant, db):
    now = datetime.now(UTC)
    old = await create(stub, tenant, regulation="lgpd", receive_time=_ts(now - timedelta(days=40)))
    soon = await create(stub, tenant, regulation="lgpd", receive_time=_ts(now - timedelta(days=10)))
    later = await create(stub, tenant, regulation="ccpa")
    done = await create(stub, tenant, regulation="lgpd", receive_time=_ts(now - timedelta(days=41)))
    await stub.CancelRequest(
        requests_pb2.CancelRequestRequest(id=done.id, reason="withdrawn"), metadata=metadata(tenant)
    )
    md = metadata(tenant, "operator")

    async def ids(**filters) -> list[str]:  # type: ignore[no-untyped-def]
        out: list[str] = []
        token = ""
        while True:
            page = await stub.ListRequests(
                requests_pb2.ListRequestsRequest(page_size=1, page_token=token, **filters),
                metadata=md,
            )
            out += [r.id for r in page.requests]
            token = page.next_page_token
            if not token:
                return out

    assert await ids() == [later.id, soon.id, old.id, done.id]  # newest receipt first
    assert await ids(overdue=True) == [old.id]  # a cancelled request is not overdue
    shown = await stub.GetRequest(requests_pb2.GetRequestRequest(id=old.id), metadata=md)
    assert shown.request.overdue and shown.request.days_left == -25
    in_ten = (now.date() + timedelta(days=10)).isoformat()
    assert await ids(due_before=in_ten) == [old.id, soon.id]  # by due date
    assert await ids(state="cancelled") == [done.id]
    assert await ids(state="received", overdue=True) == [old.id]
    await _fails(
        stub.ListRequests(requests_pb2.ListRequestsRequest(state="lost"), metadata=md),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    # One spelling of a date: not the other ISO 8601 forms Python also reads.
    compact = in_ten.replace("-", "")
    for wrong in ("soon", compact, "2026-W49-5", f"{in_ten}\n", f" {in_ten}", f"{in_ten}T00:00"):
        await _fails(
            stub.ListRequests(requests_pb2.ListRequestsRequest(due_before=wrong), metadata=md),
            grpc.StatusCode.INVALID_ARGUMENT,
        )


async def test_hostile_numbers_are_refused_and_change_nothing(stub, tenant, db):
    md = metadata(tenant)
    r = await create(stub, tenant, regulation="ccpa")
    async with db.transaction(tenant, readonly=True) as con:
        audits = await con.fetchval("SELECT count(*) FROM audit_log")
    int32_max = 2**31 - 1
    for policy, field in [
        (dict(regulation="ccpa", period_days=-30), "policy.period_months"),
        (dict(regulation="ccpa", period_months=-1, period_days=10), "policy.period_months"),
        (dict(regulation="ccpa", period_days=int32_max), "policy.period_days"),
        (dict(regulation="gdpr", period_months=1, max_extension_months=-1), "max_extension"),
        (dict(regulation="ccpa", period_days=45, max_extension_days=int32_max), "max_extension"),
        (dict(regulation="GDPR", period_months=1), "policy.regulation"),
        (dict(regulation="gdpr\n", period_months=1), "policy.regulation"),
    ]:
        error = await _fails(
            stub.SetRequestPolicy(
                requests_pb2.SetRequestPolicyRequest(policy=requests_pb2.RequestPolicy(**policy)),
                metadata=md,
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
        )
        assert field in error.details(), (policy, error.details())
    for months, days in [(-1, 0), (0, -1), (-(2**31), 0)]:
        await _fails(
            stub.ExtendRequest(
                requests_pb2.ExtendRequestRequest(id=r.id, reason="r", months=months, days=days),
                metadata=md,
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
        )
    await _fails(
        stub.ExtendRequest(
            requests_pb2.ExtendRequestRequest(id=r.id, reason="r", days=int32_max), metadata=md
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "EXTENSION_LIMIT",
    )
    for stamp in [
        Timestamp(seconds=2**62),
        Timestamp(seconds=0, nanos=-1),
        Timestamp(seconds=-(2**62)),
    ]:
        await _fails(
            stub.CreateRequest(
                requests_pb2.CreateRequestRequest(
                    kind="access", subject_id="c", regulation="gdpr", receive_time=stamp
                ),
                metadata=md,
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
        )
    policies = await stub.ListRequestPolicies(
        requests_pb2.ListRequestPoliciesRequest(), metadata=md
    )
    assert not any(p.overridden for p in policies.policies)
    found = await stub.GetRequest(requests_pb2.GetRequestRequest(id=r.id), metadata=md)
    assert found.request.days_left == r.days_left and found.request.extension_days == 0
    async with db.transaction(tenant, readonly=True) as con:
        assert await con.fetchval("SELECT count(*) FROM audit_log") == audits
        assert await con.fetchval("SELECT count(*) FROM subject_request") == 1
