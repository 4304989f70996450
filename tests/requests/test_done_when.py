"""Issue #20's "Done when", end to end: a request goes received → verified →
approved → executed → propagated to two processors (one failing at first) →
completed, once through the `kaireon` CLI (subprocesses) and once through the
REST adapter (a real HTTP client), against one server; due dates right for
each regulation; every step in the audit log; every event signed and
verified by the independent `standardwebhooks` library."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
from standardwebhooks import Webhook

from kaireon_server.app import App
from kaireon_server.platform.db import Database
from tests.requests.conftest import audit_rows
from tests.requests.test_cli_rest import _call, _cli, _run
from tests.requests.test_processors import Receiver, serving

# Received on 31 January 2026 (UTC): GDPR Art. 12(3) and UK GDPR one month
# (the month's last day when it has no 31st), CCPA 45 days, LGPD 15 days.
RECEIVED = "2026-01-31T09:00:00Z"
DUE = {"gdpr": "2026-02-28", "uk_gdpr": "2026-02-28", "ccpa": "2026-03-17", "lgpd": "2026-02-15"}


def _transitions(rows: list[dict[str, Any]]) -> list[tuple[str, Any, Any]]:
    return [(r["action"], r["changes"].get("from"), r["changes"].get("to")) for r in rows]


async def _events(receiver: Receiver, secret: str, count: int) -> list[dict[str, Any]]:
    await receiver.wait_for(count)
    return [Webhook(secret).verify(body, headers) for body, headers in receiver.received]


async def test_due_dates_per_regulation_over_rest(app: App, tenant: str):
    base = f"http://127.0.0.1:{app.http_port}/api/v1"
    async with aiohttp.ClientSession() as session:
        for regulation, due in DUE.items():
            status, body = await _call(
                session,
                "POST",
                f"{base}/requests",
                tenant,
                {
                    "kind": "erasure",
                    "subjectId": "cust_due",
                    "regulation": regulation,
                    "receiveTime": RECEIVED,
                },
            )
            assert status == 200, body
            assert (regulation, body["request"]["dueDate"]) == (regulation, due)


async def test_a_request_propagated_to_two_processors_through_the_cli_and_rest(
    app: App, grpc_target: str, seeded: str, db: Database
):
    tenant = seeded
    base = f"http://127.0.0.1:{app.http_port}/api/v1"
    # "crm" answers at once; "mailer" fails twice (HTTP 500) before it accepts.
    async with (
        serving(Receiver()) as crm,
        serving(Receiver(statuses=[500, 500])) as mailer,
        aiohttp.ClientSession() as session,
    ):
        secrets = {}
        for name, receiver in (("crm", crm), ("mailer", mailer)):
            code, out, err = await _run(
                *_cli(grpc_target, tenant, "--json", "processors", "add", name, receiver.url)
            )
            assert code == 0, err
            secrets[name] = json.loads(out)["signingSecret"]

        # Through the CLI.
        def cli(*args: str) -> list[str]:
            return _cli(grpc_target, tenant, "--json", "requests", *args)

        code, out, err = await _run(
            *cli("create", "erasure", "cust_00001", "--regulation", "gdpr", "--received", RECEIVED)
        )
        assert code == 0, err
        request = json.loads(out)
        assert (request["state"], request["dueDate"]) == ("received", DUE["gdpr"])
        cli_id = request["id"]
        code, out, err = await _run(
            *cli("verify", cli_id, "--method", "email_link", "--evidence-ref", "TICKET-1")
        )
        assert code == 0 and json.loads(out)["state"] == "awaiting_approval", err
        code, out, err = await _run(*cli("approve", cli_id, "--reason", "identity checked"))
        assert code == 0, err
        # Executed: the data is erased; propagating until both processors acknowledge.
        assert json.loads(out)["state"] == "in_progress"

        cli_events = await _events(crm, secrets["crm"], 1)
        await _events(mailer, secrets["mailer"], 3)
        async with asyncio.timeout(60):
            while True:
                code, out, err = await _run(*_cli(grpc_target, tenant, "requests", "show", cli_id))
                assert code == 0, err
                if " completed " in out:
                    break
                await asyncio.sleep(0.2)
        assert "processor crm" in out and "processor mailer" in out
        assert out.count(": delivered,") == 2
        assert "attempts 3" in out  # mailer: two failures, then the acknowledgement
        assert cli_events[0]["type"] == "subject.erased"
        assert cli_events[0]["data"]["subjectId"] == "cust_00001"
        assert cli_events[0]["data"]["requestId"] == cli_id

        # Through REST, for another subject.
        crm.received.clear()
        mailer.received.clear()
        mailer.statuses = [500]
        status, body = await _call(
            session,
            "POST",
            f"{base}/requests",
            tenant,
            {
                "kind": "erasure",
                "subjectId": "cust_00002",
                "regulation": "lgpd",
                "receiveTime": RECEIVED,
            },
        )
        assert status == 200, body
        rest_id = body["request"]["id"]
        assert body["request"]["dueDate"] == DUE["lgpd"]
        status, body = await _call(
            session,
            "POST",
            f"{base}/requests/{rest_id}:verify",
            tenant,
            {
                "method": "id_document",
                "evidenceReference": "VAULT-7",
                "result": "VERIFICATION_RESULT_VERIFIED",
            },
        )
        assert status == 200 and body["request"]["state"] == "awaiting_approval", body
        status, body = await _call(
            session, "POST", f"{base}/requests/{rest_id}:approve", tenant, {"reason": "checked"}
        )
        assert status == 200 and body["request"]["state"] == "in_progress", body
        await _events(crm, secrets["crm"], 1)
        await _events(mailer, secrets["mailer"], 2)
        async with asyncio.timeout(60):
            while True:
                status, body = await _call(session, "GET", f"{base}/requests/{rest_id}", tenant)
                assert status == 200, body
                if body["request"]["state"] == "completed":
                    break
                await asyncio.sleep(0.2)
        deliveries = {d["processorName"]: d for d in body["deliveries"]}
        assert {n: d["state"] for n, d in deliveries.items()} == {
            "crm": "delivered",
            "mailer": "delivered",
        }
        assert deliveries["mailer"]["attempts"] == 2
        assert all(d["acknowledgeTime"] for d in deliveries.values())

    # Every step in the audit log, in order: the request's transitions (actor,
    # from, to), the erasure the approval executed, each processor's
    # acknowledgement, and the completion they settled.
    for rid, subject in ((cli_id, "cust_00001"), (rest_id, "cust_00002")):
        rows = await audit_rows(db, tenant, rid)
        actions = [r["action"] for r in rows]
        assert actions[:3] == [
            "subject_request_received",
            "subject_request_verified",
            "subject_request_approved",
        ], actions
        assert sorted(actions[3:5]) == ["processor_event_acknowledged"] * 2, actions
        assert actions[5:] == ["subject_request_completed"], actions
        assert _transitions(rows[:3]) + _transitions(rows[5:]) == [
            ("subject_request_received", None, "received"),
            ("subject_request_verified", "received", "awaiting_approval"),
            ("subject_request_approved", "awaiting_approval", "in_progress"),
            ("subject_request_completed", "in_progress", "completed"),
        ]
        assert all(r["actor"] == "admin@headers" for r in rows[:3])
        assert all(r["actor"] == "processor-delivery" for r in rows[3:])
        acknowledged = {r["changes"]["processorId"] for r in rows[3:5]}
        async with db.transaction(tenant, readonly=True) as con:
            processors = {
                str(r["id"]) for r in await con.fetch("SELECT id FROM processor_recipient")
            }
            erasure_id = await con.fetchval(
                "SELECT id::text FROM audit_log WHERE action = 'gdpr_erasure' AND entity_id = $1",
                subject,
            )
        assert acknowledged == processors
        assert rows[2]["changes"]["erasureAuditId"] == erasure_id
