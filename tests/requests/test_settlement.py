"""Settlement through REST: an erasure request whose processors have not all
acknowledged stays in_progress; it completes when the last one acknowledges
or an admin waives it (audited, reason required)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from kaireon_server.app import App
from kaireon_server.platform.db import Database
from kaireon_server.requests.processor_repository import DeliveryState
from kaireon_server.requests.settlement import all_settled
from tests.requests.conftest import audit_rows
from tests.requests.test_cli_rest import _call
from tests.requests.test_processors import Receiver, serving


class ByProcessor(Receiver):
    """Answers by the processor its URL names (`?to=`), not by arrival order: the
    two processors' deliveries are due at the same instant and claimed in either
    order."""

    failing: frozenset[str] = frozenset()

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append((await request.read(), dict(request.headers)))
        return web.Response(status=500 if request.query.get("to") in self.failing else 204)


@pytest.fixture
async def receiver() -> AsyncIterator[ByProcessor]:
    async with serving(ByProcessor()) as target:
        yield target


async def _request(session: aiohttp.ClientSession, base: str, tenant: str, rid: str) -> Any:
    status, body = await _call(session, "GET", f"{base}/requests/{rid}", tenant)
    assert status == 200, body
    return body


async def _until_state(
    session: aiohttp.ClientSession, base: str, tenant: str, rid: str, want: list[str]
) -> Any:
    """Poll until the deliveries reach `want` (by processor name)."""
    async with asyncio.timeout(30):
        while True:
            body = await _request(session, base, tenant, rid)
            if [d["state"] for d in body.get("deliveries", [])] == want:
                return body
            await asyncio.sleep(0.1)


async def test_an_erasure_completes_only_when_every_processor_settled(
    app: App,
    seeded: str,
    db: Database,
    receiver: ByProcessor,
):
    tenant = seeded
    receiver.failing = frozenset({"b-down"})  # "a-ok" acknowledges; "b-down" dies (3 attempts)
    base = f"http://127.0.0.1:{app.http_port}/api/v1"
    async with aiohttp.ClientSession() as session:
        ids = {}
        for name in ("a-ok", "b-down"):
            status, body = await _call(
                session,
                "POST",
                f"{base}/processors",
                tenant,
                {"name": name, "url": f"{receiver.url}?to={name}"},
            )
            assert status == 200, body
            ids[name] = body["processor"]["id"]
        status, body = await _call(
            session,
            "POST",
            f"{base}/requests",
            tenant,
            {"kind": "erasure", "subjectId": "cust_00001", "regulation": "gdpr"},
        )
        assert status == 200, body
        rid = body["request"]["id"]
        status, body = await _call(
            session,
            "POST",
            f"{base}/requests/{rid}:verify",
            tenant,
            {
                "method": "email_link",
                "evidenceReference": "T-1",
                "result": "VERIFICATION_RESULT_VERIFIED",
            },
        )
        assert status == 200, body
        status, body = await _call(session, "POST", f"{base}/requests/{rid}:approve", tenant, {})
        assert status == 200, body
        assert body["request"]["state"] == "in_progress"  # propagating

        body = await _until_state(session, base, tenant, rid, ["delivered", "dead"])
        assert body["request"]["state"] == "in_progress"  # a dead event is not settled
        acked = body["deliveries"][0]
        assert acked["processorName"] == "a-ok" and acked["acknowledgeTime"]
        assert "acknowledgeTime" not in body["deliveries"][1]

        waive = f"{base}/requests/{rid}/deliveries/{ids['b-down']}:waive"
        # No reason: refused, nothing changed.
        status, body = await _call(session, "POST", waive, tenant, {"reason": " "})
        assert status == 400, body
        assert (await _request(session, base, tenant, rid))["request"]["state"] == "in_progress"
        # A processor without an unsettled event: nothing to waive.
        status, body = await _call(
            session,
            "POST",
            f"{base}/requests/{rid}/deliveries/{ids['a-ok']}:waive",
            tenant,
            {"reason": "x"},
        )
        assert status == 400 or status == 412, body  # FAILED_PRECONDITION

        status, body = await _call(
            session, "POST", waive, tenant, {"reason": "CASE-7: erased by the processor's support"}
        )
        assert status == 200, body
        assert body["request"]["state"] == "completed"
        assert [(d["state"], d.get("waiveReason", "")) for d in body["deliveries"]] == [
            ("delivered", ""),
            ("waived", "CASE-7: erased by the processor's support"),
        ]
        status, body = await _call(session, "POST", waive, tenant, {"reason": "again"})
        assert status != 200, body
    waived = [
        r for r in await audit_rows(db, tenant, rid) if r["action"] == "processor_delivery_waived"
    ]
    assert len(waived) == 1 and waived[0]["changes"]["processorId"] == ids["b-down"]


def _state(state: str) -> DeliveryState:
    return DeliveryState(
        processor_id=None,
        processor_name="p",
        state=state,
        attempts=1,  # type: ignore[arg-type]
        acknowledged_at=None,
        waive_reason="",
    )


def test_all_settled() -> None:
    assert all_settled([])
    assert all_settled([_state("delivered"), _state("waived")])
    assert not all_settled([_state("delivered"), _state("dead")])
    assert not all_settled([_state("pending")])
