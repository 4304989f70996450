"""The platform's REST contract for DSAR, through the REST adapter over real HTTP."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from kaireon_server.app import App
from tests.dsar.conftest import assert_canonical


@pytest.fixture
async def http(app: App) -> AsyncIterator[tuple[aiohttp.ClientSession, str]]:
    async with aiohttp.ClientSession() as session:
        yield session, f"http://127.0.0.1:{app.http_port}/api/v1/dsar"


def _headers(tenant: str, role: str = "operator") -> dict[str, str]:
    return {"Content-Type": "application/json", "X-Tenant-Id": tenant, "X-User-Role": role}


async def _json(response: aiohttp.ClientResponse) -> Any:
    return json.loads(await response.read())


async def _watch(session: aiohttp.ClientSession, url: str, tenant: str) -> list[dict[str, Any]]:
    async with session.get(url, headers=_headers(tenant)) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("application/x-ndjson")
        lines = (await response.read()).decode().splitlines()
    return [json.loads(line)["result"]["request"] for line in lines]


async def test_post_then_poll_completed_returns_the_export_attached(http, seeded):
    session, base = http
    body = json.dumps({"requestType": "export", "subjectId": "cust_00001"})
    async with session.post(base, data=body, headers=_headers(seeded)) as response:
        assert response.status == 200
        created = (await _json(response))["request"]
    assert created["status"] == "pending" and created["subjectId"] == "cust_00001"

    states = await _watch(session, f"{base}/{created['id']}/watch", seeded)
    assert states[-1]["status"] == "completed" and states[-1]["progress"] == 100
    assert [int(s["version"]) for s in states] == sorted(int(s["version"]) for s in states)

    async with session.get(f"{base}?status=completed", headers=_headers(seeded)) as response:
        assert response.status == 200
        listed = (await _json(response))["requests"]
    assert [r["id"] for r in listed] == [created["id"]]
    exported = listed[0]["exportedData"]
    assert exported["encrypted"] is False and exported["customerId"] == "cust_00001"
    # RFC 8785 key order, as in the downloaded document (checked byte for byte below).
    keys = ["counts", "customerId", "data", "encrypted", "exportedAt", "requestId"]
    assert list(exported) == keys
    # Counts are JSON integers, as the seed contract shows them.
    assert exported["counts"]["interactions"] == 5
    assert all(type(v) is int for v in exported["counts"].values())
    assert len(exported["data"]["consentRecords"]) == 2
    # Row values too: integral numbers print as integers, as in the document.
    assert all(type(r["id"]) is int for r in exported["data"]["interactions"])

    async with session.get(f"{base}/{created['id']}", headers=_headers(seeded)) as response:
        single = await _json(response)
    assert single["id"] == created["id"] and single["exportedData"]["counts"] == exported["counts"]

    async with session.get(
        listed[0]["exportUrl"].replace("/api/v1/dsar", base), headers=_headers(seeded)
    ) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("application/json")
        # The package's digest and signature arrive as plain headers (adapter allow-list).
        assert response.headers["X-Export-Digest-Sha256"] == listed[0]["exportDigestSha256"]
        assert response.headers["X-Export-Signature"] == listed[0]["exportSignature"]
        document = await response.read()
    assert hashlib.sha256(document).hexdigest() == listed[0]["exportDigestSha256"]
    assert assert_canonical(document)["counts"] == exported["counts"]
    # The inline copy, printed in the order REST gave it, is the download byte for byte.
    for inline in (exported, single["exportedData"]):
        printed = json.dumps(inline, separators=(",", ":"), ensure_ascii=False).encode()
        assert printed == document


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"requestType": "erase", "subjectId": "c"}, 400),
        ({"requestType": "export", "subjectId": ""}, 400),
        ({"requestType": "export", "subjectId": "x" * 257}, 400),
    ],
)
async def test_bad_requests_are_400(http, tenant, body, status):
    session, base = http
    async with session.post(base, data=json.dumps(body), headers=_headers(tenant)) as response:
        assert response.status == status
        error = await _json(response)
    assert error["code"] == 3 and error["details"]


async def test_unknown_and_foreign_ids_are_404_and_viewers_403(http, seeded, tenant):
    session, base = http
    body = json.dumps({"requestType": "export", "subjectId": "cust_00002"})
    async with session.post(base, data=body, headers=_headers(seeded)) as response:
        created = (await _json(response))["request"]
    for path in (created["id"], f"{created['id']}/export", "00000000-0000-0000-0000-000000000000"):
        async with session.get(f"{base}/{path}", headers=_headers(f"{tenant}q")) as response:
            assert response.status == 404, path
    async with session.get(
        f"{base}/{created['id']}", headers=_headers(seeded, "viewer")
    ) as response:
        assert response.status == 403
