"""Bad input, unknown or foreign decisions, insufficient role: the right status, nothing written."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from tests.provenance.conftest import AFTER_CHANGE, fetch


async def _audit_count(db, tenant: str) -> int:
    async with db.transaction(tenant) as con:
        return await con.fetchval("SELECT count(*) FROM audit_log WHERE tenant_id = $1", tenant)


def _reason(error: grpc.aio.AioRpcError) -> str:
    status = rpc_status.from_call(error)
    for detail in status.details if status else ():
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info.reason
    return ""


async def test_unknown_decision_is_not_found(channel, seeded, db):
    before = await _audit_count(db, seeded)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await fetch(channel, seeded, "dec_does_not_exist")
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert _reason(caught.value) == "DECISION_NOT_FOUND"
    assert await _audit_count(db, seeded) == before


async def test_another_tenants_decision_is_not_found(channel, seeded, db, tenant):
    other = tenant + "x"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await fetch(channel, other, AFTER_CHANGE)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    # Same answer as for an id that exists nowhere: existence does not leak.
    assert caught.value.details() == "no decision with this id"
    assert await _audit_count(db, other) == 0


@pytest.mark.parametrize("role", ["viewer", "operator"])
async def test_non_admin_is_denied(channel, seeded, db, role):
    before = await _audit_count(db, seeded)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await fetch(channel, seeded, AFTER_CHANGE, role=role)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert await _audit_count(db, seeded) == before


@pytest.mark.parametrize(
    ("decision_id", "description"),
    [("", "required"), ("d" * 257, "at most 256 characters"), ("dec\n1", "must be printable text")],
)
async def test_malformed_decision_id_is_invalid_argument(
    channel, seeded, db, decision_id, description
):
    before = await _audit_count(db, seeded)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await fetch(channel, seeded, decision_id)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == f"decision_id: {description}"
    status = rpc_status.from_call(caught.value)
    violations = []
    for detail in status.details:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            violations += [v.field for v in bad.field_violations]
    assert violations == ["decision_id"]
    assert await _audit_count(db, seeded) == before
