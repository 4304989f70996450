"""The platform's REST contract of the erasure API, through the REST adapter over real HTTP."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from kaireon_server.app import App
from kaireon_server.platform import data_map
from kaireon_server.platform.db import Database
from tests.erasure.support import snapshot
from tests.erasure.test_faults import fault

SEED_BODY = b'{ "customerId": "cust_12345" }'


@pytest.fixture
async def http(app: App) -> AsyncIterator[tuple[aiohttp.ClientSession, str]]:
    async with aiohttp.ClientSession() as session:
        yield session, f"http://127.0.0.1:{app.http_port}/api/v1/gdpr/erasure"


def _headers(tenant: str, role: str = "admin") -> dict[str, str]:
    # The seed's curl example, header for header.
    return {"Content-Type": "application/json", "X-Tenant-Id": tenant, "X-User-Role": role}


async def _post(
    http: tuple[aiohttp.ClientSession, str], tenant: str, body: bytes, role: str = "admin"
) -> tuple[int, Any]:
    session, url = http
    async with session.post(url, data=body, headers=_headers(tenant, role)) as response:
        text = await response.text()
        assert response.headers["Content-Type"].startswith("application/json")
        return response.status, json.loads(text)


def _assert_seed_shape(body: dict[str, Any], customer: str) -> None:
    assert body["success"] is True
    assert body["customerId"] == customer
    counts = body["deletedCounts"]
    # The nine seed keys first, in the seed's order, then the additions.
    assert list(counts)[:9] == list(data_map.SEED_COUNT_KEYS)
    assert list(counts) == list(data_map.count_keys())
    # JSON numbers, as the seed shows (not proto3's int64-as-string).
    assert all(type(v) is int for v in counts.values())
    assert type(body["totalDeleted"]) is int
    assert body["totalDeleted"] == sum(counts.values())


async def test_the_seed_example_request_gets_the_seed_response_shape(http, tenant: str):
    status, body = await _post(http, tenant, SEED_BODY)
    assert status == 200
    _assert_seed_shape(body, "cust_12345")
    assert body["totalDeleted"] == 0
    assert set(body["deletedCounts"].values()) == {0}
    # Beyond the seed: additional fields only, the seed's four come first.
    assert list(body)[:4] == ["success", "customerId", "deletedCounts", "totalDeleted"]


async def test_rest_erasure_deletes_and_counts(http, db: Database, seeded: str):
    before = await snapshot(db, seeded)
    status, body = await _post(http, seeded, b'{"customerId": "cust_00001"}')
    assert status == 200
    _assert_seed_shape(body, "cust_00001")
    assert body["deletedCounts"]["interactionHistory"] == 5
    assert body["deletedCounts"]["dynamicSchemaRows"] == 1
    assert body["skippedTables"] == [f"ds_{seeded}_web_sessions"]
    assert body["receipt"]["signature"] not in ("", "unsigned")
    after = await snapshot(db, seeded)
    assert ("interaction_history", "cust_00001") not in after
    assert (
        after[("interaction_history", "cust_00002")]
        == before[("interaction_history", "cust_00002")]
    )


async def test_rest_dry_run(http, db: Database, seeded: str):
    before = await snapshot(db, seeded)
    status, body = await _post(http, seeded, b'{"customerId": "cust_00001", "dryRun": true}')
    assert status == 200
    _assert_seed_shape(body, "cust_00001")
    assert body["dryRun"] is True and "receipt" not in body
    assert body["totalDeleted"] > 0
    kept = {t["table"]: t for t in body["retainedTables"]}
    assert kept["consent_record"]["retention"] == "RETENTION_KEPT"
    assert kept["consent_record"]["rowCount"] == 2
    assert "Art." in kept["consent_record"]["legalBasis"]
    after = await snapshot(db, seeded)
    assert {k: v for k, v in after.items() if k[0] != "audit_log"} == {
        k: v for k, v in before.items() if k[0] != "audit_log"
    }


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"{}", id="missing"),
        pytest.param(b'{"customerId": ""}', id="empty"),
        pytest.param(b'{"customerId": null}', id="null"),
        pytest.param(b'{"customerId": 12345}', id="number"),
        pytest.param(b'{"customerId": ["cust_1"]}', id="array"),
        pytest.param(b'{"customerId": {"id": "cust_1"}}', id="object"),
        pytest.param(b'{"customerId": true}', id="boolean"),
        pytest.param(json.dumps({"customerId": "c" * 257}).encode(), id="too-long"),
        pytest.param(b'{ "customerId": "cust_12345" ', id="invalid-json"),
        pytest.param(b"not json", id="not-json"),
        pytest.param(b"", id="empty-body"),
        pytest.param(b'["cust_12345"]', id="not-an-object"),
    ],
)
async def test_bad_requests_are_400_with_a_status_body(
    http, db: Database, seeded: str, body: bytes
):
    before = await snapshot(db, seeded)
    status, error = await _post(http, seeded, body)
    assert status == 400, error
    assert error["code"] == 3  # INVALID_ARGUMENT
    assert error["message"]
    assert isinstance(error["details"], list)
    assert await snapshot(db, seeded) == before


async def test_non_admin_is_403(http, db: Database, seeded: str):
    before = await snapshot(db, seeded)
    for role in ("viewer", "operator"):
        status, error = await _post(http, seeded, SEED_BODY, role=role)
        assert status == 403
        assert error["code"] == 7  # PERMISSION_DENIED
    assert await snapshot(db, seeded) == before


async def test_a_database_failure_is_500_and_rolls_back(http, db: Database, seeded: str):
    before = await snapshot(db, seeded)
    async with fault(db, seeded, "delivery", "DELETE"):
        status, error = await _post(http, seeded, b'{"customerId": "cust_00001"}')
    assert status == 500
    assert error["code"] == 13  # INTERNAL
    assert await snapshot(db, seeded) == before


async def test_a_legal_hold_answers_400_failed_precondition(http, seeded: str):
    session, url = http
    hold_url = url.replace("/erasure", "/legal-holds")
    async with session.post(
        hold_url,
        data=b'{"customerId": "cust_00001", "reason": "CASE-9"}',
        headers=_headers(seeded),
    ) as response:
        assert response.status == 200
        hold = await response.json()
        assert hold["legalHold"]["reason"] == "CASE-9"
    status, error = await _post(http, seeded, b'{"customerId": "cust_00001"}')
    # grpc-gateway maps FAILED_PRECONDITION to 400.
    assert status == 400 and error["code"] == 9
    assert error["details"][0]["reason"] == "LEGAL_HOLD"
    async with session.post(
        f"{hold_url}:release", data=b'{"customerId": "cust_00001"}', headers=_headers(seeded)
    ) as response:
        assert response.status == 200
    status, _ = await _post(http, seeded, b'{"customerId": "cust_00001"}')
    assert status == 200
