"""TestProcessor (`POST /api/v1/processors/{id}:test`, `kaireon processors
test`): a signed webhook.test event sent now, the processor's answer reported
and audited, nothing queued."""

from __future__ import annotations

from urllib.parse import quote

import aiohttp
from standardwebhooks import Webhook

from kaireon_server.app import App
from kaireon_server.platform.db import Database
from tests.requests.conftest import audit_rows
from tests.requests.test_cli_rest import _call, _cli, _run
from tests.requests.test_processors import Receiver, receiver  # noqa: F401


async def test_a_test_event_reports_the_processors_answer(
    app: App,
    grpc_target: str,
    tenant: str,
    db: Database,
    receiver: Receiver,  # noqa: F811
):
    receiver.statuses = [204, 500]
    base = f"http://127.0.0.1:{app.http_port}/api/v1"
    async with aiohttp.ClientSession() as session:
        status, body = await _call(
            session, "POST", f"{base}/processors", tenant, {"name": "crm", "url": receiver.url}
        )
        assert status == 200, body
        pid, secret = body["processor"]["id"], body["signingSecret"]
        status, ok = await _call(session, "POST", f"{base}/processors/{pid}:test", tenant, {})
        assert status == 200, ok
        assert ok["delivered"] is True and ok["httpStatus"] == 204 and ok["error"] == ""
        assert ok["latencyMs"] >= 0
        # What the processor got is a Standard Webhooks event it can verify.
        event_body, headers = receiver.received[0]
        event = Webhook(secret).verify(event_body, headers)
        assert event["type"] == "webhook.test" and event["data"] == {"processorId": pid}
        assert headers["webhook-id"] == ok["webhookId"]
        # The second answer is a 500: reported, not retried.
        status, failed = await _call(session, "POST", f"{base}/processors/{pid}:test", tenant, {})
        assert status == 200, failed
        assert failed["delivered"] is False and failed["httpStatus"] == 500
        assert failed["error"] == "HTTP 500"
        # An unknown processor: 404, nothing sent.
        status, missing = await _call(
            session,
            "POST",
            f"{base}/processors/9b2f9a52-4e4d-4a43-8a43-0d6a8d1c0e51:test",
            tenant,
            {},
        )
        assert status == 404, missing
    assert len(receiver.received) == 2
    async with db.transaction(tenant, readonly=True) as con:
        assert await con.fetchval("SELECT count(*) FROM processor_outbox") == 0
    tested = [r for r in await audit_rows(db, tenant, pid) if r["action"] == "processor_tested"]
    assert [(r["changes"]["httpStatus"], r["changes"]["delivered"]) for r in tested] == [
        (204, True),
        (500, False),
    ]

    # The CLI: exit 0 on a 2xx answer, 1 otherwise.
    code, out, err = await _run(*_cli(grpc_target, tenant, "processors", "test", pid))
    assert code == 0, err
    assert "delivered: HTTP 204" in out
    receiver.statuses = [503]
    code, out, err = await _run(*_cli(grpc_target, tenant, "processors", "test", pid))
    assert code == 1 and "not delivered: HTTP 503" in out


async def test_a_malformed_or_unknown_processor_id_is_refused_and_sends_nothing(
    app: App,
    tenant: str,
    db: Database,
    receiver: Receiver,  # noqa: F811
):
    base = f"http://127.0.0.1:{app.http_port}/api/v1"
    async with aiohttp.ClientSession() as session:
        status, body = await _call(
            session, "POST", f"{base}/processors", tenant, {"name": "crm", "url": receiver.url}
        )
        pid = body["processor"]["id"]
        for bad in ("x", f"{pid}\n", pid.upper().replace("-", ""), f" {pid}"):
            status, refused = await _call(
                session, "POST", f"{base}/processors/{quote(bad, safe='')}:test", tenant, {}
            )
            assert status == 400, (bad, refused)
        # Another tenant's processor: 404, nothing sent.
        status, other = await _call(
            session, "POST", f"{base}/processors/{pid}:test", f"{tenant}x", {}
        )
        assert status == 404, other
        # A body field the request does not have: 400, nothing sent.
        status, unknown = await _call(
            session, "POST", f"{base}/processors/{pid}:test", tenant, {"processorID": pid}
        )
        assert status == 400, unknown
    assert receiver.received == []
    async with db.transaction(tenant, readonly=True) as con:
        assert (
            await con.fetchval("SELECT count(*) FROM audit_log WHERE action = 'processor_tested'")
            == 0
        )
