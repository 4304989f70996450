"""Helpers of the observability tests: free ports, the Prometheus binary, a workload."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from kaireon_server.demo.seed import customer_id, decision_id

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "observability"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def tool(name: str) -> str:
    """Debian's prometheus / promtool: installed by tools/dev/setup.sh (as root).
    Missing is a failure, never a skip: CI must run these checks."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"{name} not found: run tools/dev/setup.sh as root (apt-get install prometheus)"
            + (" [CI]" if os.environ.get("CI") else "")
        )
    return path


def headers(tenant: str, role: str = "admin") -> dict[str, str]:
    return {"X-Tenant-Id": tenant, "X-User-Role": role}


async def workload(base: str, tenant: str) -> dict[str, Any]:
    """Every capability once or twice, through REST: what the metrics must then show."""
    seen: dict[str, Any] = {}
    async with aiohttp.ClientSession(base_url=base) as http:
        for n in (1, 2):
            async with http.post(
                "/api/v1/gdpr/erasure", json={"customerId": customer_id(n)}, headers=headers(tenant)
            ) as r:
                assert r.status == 200, await r.text()
        async with http.post(
            "/api/v1/gdpr/erasure",
            json={"customerId": customer_id(3), "dryRun": True},
            headers=headers(tenant),
        ) as r:
            assert r.status == 200, await r.text()
        async with http.post(
            "/api/v1/gdpr/legal-holds",
            json={"customerId": customer_id(4), "reason": "CASE-1"},
            headers=headers(tenant),
        ) as r:
            assert r.status == 200, await r.text()
        async with http.post(
            "/api/v1/gdpr/erasure", json={"customerId": customer_id(4)}, headers=headers(tenant)
        ) as r:
            assert r.status == 400, await r.text()  # FAILED_PRECONDITION: legal hold
        async with http.get(
            f"/api/v1/decisions/{decision_id(3, 1)}/provenance", headers=headers(tenant)
        ) as r:
            assert r.status == 200, await r.text()
        async with http.post(
            "/api/v1/dsar",
            json={"subjectId": customer_id(3), "requestType": "export"},
            headers=headers(tenant),
        ) as r:
            assert r.status == 200, await r.text()
            request_id = (await r.json())["request"]["id"]
        for _ in range(200):
            async with http.get(f"/api/v1/dsar/{request_id}", headers=headers(tenant)) as r:
                body = await r.json()
                if body.get("request", body)["status"] == "completed":
                    break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the DSAR export did not complete")
        definition = {
            "name": "metrics",
            "nodes": [
                {"id": "src", "type": "source.inline", "config": {"records": [{"n": 1}]}},
                {
                    "id": "f",
                    "type": "transform.filter",
                    "dependsOn": ["src"],
                    "config": {"where": "n > 0"},
                },
            ],
        }
        async with http.post(
            "/api/v1/flow/runs",
            json={"definition": definition, "runId": "m1"},
            headers=headers(tenant, "operator"),
        ) as r:
            assert r.status == 200, await r.text()
        for _ in range(200):
            async with http.get("/api/v1/flow/runs/m1", headers=headers(tenant)) as r:
                body = await r.json()
                if body.get("run", body)["state"] == "RUN_STATE_SUCCEEDED":
                    break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the flow run did not finish")
        async with http.post("/api/v1/audit:verify", json={}, headers=headers(tenant)) as r:
            assert r.status == 200, await r.text()
        # A path with a customer id that matches no route: one "unmatched" label.
        async with http.get(f"/api/v1/nothing/{customer_id(3)}", headers=headers(tenant)) as r:
            assert r.status == 404
        seen["request_id"] = request_id
    return seen


def span_values(span: Any) -> list[str]:
    """Everything a span shows a trace backend: name, attribute values, events."""
    values = [span.name, *(str(v) for v in (span.attributes or {}).values())]
    values += [str(e.name) + str(dict(e.attributes or {})) for e in span.events]
    return values
