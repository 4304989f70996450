"""The REST adapter runs inside the server process and reaches its services."""

from __future__ import annotations

import aiohttp


async def test_rest_adapter_serves_audit_routes(app, tenant) -> None:
    assert app.http_port > 0
    base = f"http://127.0.0.1:{app.http_port}"
    headers = {"X-Tenant-Id": tenant, "X-User-Role": "admin"}
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/healthz") as response:
            assert response.status == 200
        async with http.post(f"{base}/api/v1/audit:verify", headers=headers) as response:
            assert response.status == 200
            body = await response.json()
            assert body["valid"] is True and body["rowsChecked"] == "0"
        async with http.get(f"{base}/api/v1/audit/events", headers=headers) as response:
            assert response.status == 200
            assert (await response.json()) == {"events": [], "nextPageToken": ""}
        async with http.get(f"{base}/api/v1/audit/events") as response:
            assert response.status == 401
            error = await response.json()
            assert error["code"] == 16 and error["details"][0]["reason"] == "MISSING_TENANT"
        async with http.get(
            f"{base}/api/v1/audit/events", headers={**headers, "X-User-Role": "viewer"}
        ) as response:
            assert response.status == 403
        async with http.get(f"{base}/openapi.json") as response:
            spec = await response.json()
            assert "/api/v1/audit/events" in spec["paths"]
