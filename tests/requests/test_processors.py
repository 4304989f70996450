"""Erasure propagation to processors: the outbox row is written in the
erasure's transaction; the delivery worker POSTs it to a real loopback HTTP
receiver, signed per Standard Webhooks (verified by the independent
`standardwebhooks` library), with retries, backoff and a dead letter."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import grpc
import pytest
from aiohttp import web
from google.protobuf import json_format
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey
from standardwebhooks import Webhook, WebhookVerificationError

from kaireon.dsar.v1 import dsar_pb2, dsar_pb2_grpc
from kaireon.erasure.v1 import erasure_pb2, erasure_pb2_grpc
from kaireon.requests.v1 import requests_pb2
from kaireon_client.canonical import canonical_json
from kaireon_client.receipt import verify_receipt
from kaireon_server.platform.db import Database
from kaireon_server.platform.db.listener import Listener
from kaireon_server.platform.errors import InvalidArgument
from kaireon_server.platform.tasks import cancel_and_wait
from kaireon_server.requests import processor_repository
from kaireon_server.requests.delivery import DeliverySettings, DeliveryWorker, new_session
from kaireon_server.requests.processors import validate_url
from tests.requests.conftest import create, verify
from tests.support.server import metadata


@dataclass
class Receiver:
    """A loopback webhook endpoint: answers `statuses` in turn (then 204), keeps what it got."""

    statuses: list[int] = field(default_factory=list)
    received: list[tuple[bytes, dict[str, str]]] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append((await request.read(), dict(request.headers)))
        status = self.statuses.pop(0) if self.statuses else 204
        return web.Response(status=status)

    async def wait_for(self, count: int, timeout: float = 30) -> None:
        async with asyncio.timeout(timeout):
            while len(self.received) < count:
                await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def serving(target: Receiver) -> AsyncIterator[Receiver]:
    """`target` answering on a loopback port (its `url` set) until the block ends."""
    app = web.Application()
    app.router.add_post("/hooks", target.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    target.url = f"http://127.0.0.1:{port}/hooks"
    try:
        yield target
    finally:
        await runner.cleanup()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with serving(Receiver()) as target:
        yield target


async def _register(stub, tenant: str, url: str, name: str = "crm") -> tuple[str, str]:  # type: ignore[no-untyped-def]
    reply = await stub.RegisterProcessor(
        requests_pb2.RegisterProcessorRequest(name=name, url=url), metadata=metadata(tenant)
    )
    assert reply.signing_secret.startswith("whsec_")
    return reply.processor.id, reply.signing_secret


async def _outbox(db: Database, tenant: str) -> list[dict[str, object]]:
    async with db.transaction(tenant, readonly=True) as con:
        rows = await con.fetch(
            "SELECT status, attempts, subject_id, last_status FROM processor_outbox ORDER BY created_at"
        )
    return [dict(r) for r in rows]


async def _settled(
    db: Database, tenant: str, status: str, timeout: float = 30
) -> list[dict[str, object]]:
    async with asyncio.timeout(timeout):
        while True:
            rows = await _outbox(db, tenant)
            if rows and all(r["status"] == status for r in rows):
                return rows
            await asyncio.sleep(0.1)


async def test_a_direct_erasure_reaches_the_processor_signed(stub, channel, seeded, db, receiver):
    _, secret = await _register(stub, seeded, receiver.url)
    erasure = erasure_pb2_grpc.ErasureServiceStub(channel)
    await erasure.EraseCustomer(
        erasure_pb2.EraseCustomerRequest(customer_id="cust_00001"), metadata=metadata(seeded)
    )
    await receiver.wait_for(1)
    body, headers = receiver.received[0]
    event = Webhook(secret).verify(body, headers)  # the independent verifier
    assert event["type"] == "subject.erased"
    assert event["data"]["subjectId"] == "cust_00001" and event["data"]["erasureAuditId"]
    rows = await _settled(db, seeded, "delivered")
    assert rows == [
        {"status": "delivered", "attempts": 1, "subject_id": "cust_00001", "last_status": 204}
    ]
    # The same bytes with one changed character, or another secret, do not verify.
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body.replace(b"cust_00001", b"cust_00009"), headers)
    listed = await stub.ListProcessors(
        requests_pb2.ListProcessorsRequest(), metadata=metadata(seeded)
    )
    assert [(p.name, p.delivered, p.pending, p.dead) for p in listed.processors] == [
        ("crm", 1, 0, 0)
    ]


async def test_an_approved_erasure_is_retried_with_backoff(stub, seeded, db, receiver):
    receiver.statuses = [500, 503]
    _, secret = await _register(stub, seeded, receiver.url)
    r = await create(stub, seeded, kind="erasure", subject="cust_00002")
    await verify(stub, seeded, r.id)
    await stub.ApproveRequest(
        requests_pb2.ApproveRequestRequest(id=r.id), metadata=metadata(seeded)
    )
    rows = await _settled(db, seeded, "delivered")
    assert rows[0]["attempts"] == 3 and len(receiver.received) == 3
    # Every attempt is the same event (one webhook-id), each signed afresh.
    ids = {h["webhook-id"] for _, h in receiver.received}
    assert len(ids) == 1
    for body, headers in receiver.received:
        assert Webhook(secret).verify(body, headers)["data"]["requestId"] == r.id


async def test_a_processor_that_keeps_failing_is_dead_lettered(stub, channel, seeded, db, receiver):
    receiver.statuses = [500] * 10
    await _register(stub, seeded, receiver.url)
    erasure = erasure_pb2_grpc.ErasureServiceStub(channel)
    await erasure.EraseCustomer(
        erasure_pb2.EraseCustomerRequest(customer_id="cust_00003"), metadata=metadata(seeded)
    )
    rows = await _settled(db, seeded, "dead")
    assert rows[0]["attempts"] == 3 and rows[0]["last_status"] == 500  # the test max
    await asyncio.sleep(1)  # nothing more is sent after the dead letter
    assert len(receiver.received) == 3
    listed = await stub.ListProcessors(
        requests_pb2.ListProcessorsRequest(), metadata=metadata(seeded)
    )
    assert listed.processors[0].dead == 1


async def test_a_delivery_is_made_when_the_database_says_it_is_due(
    stub, channel, seeded, db, receiver
):
    """The worker sleeps until the next pending delivery is due by the database's
    clock, not by a timer of its own: a retry another process scheduled (here
    inserted by hand, as that process's failure leaves it) is made when due, not
    at the 30 s poll. Before, a worker woken a moment early by its own timer
    (uvloop's clock has millisecond steps) found nothing due and waited for the poll."""
    await _register(stub, seeded, receiver.url)
    erasure = erasure_pb2_grpc.ErasureServiceStub(channel)
    await erasure.EraseCustomer(
        erasure_pb2.EraseCustomerRequest(customer_id="cust_00005"), metadata=metadata(seeded)
    )
    await _settled(db, seeded, "delivered")
    loop = asyncio.get_running_loop()
    async with db.transaction(seeded) as con:
        await con.execute(
            "INSERT INTO processor_outbox (tenant_id, recipient_id, event_type, subject_id,"
            " payload, attempts, last_status, next_attempt_at)"
            " SELECT tenant_id, recipient_id, event_type, subject_id, payload, 1, 500,"
            " clock_timestamp() + interval '1.5 seconds' FROM processor_outbox"
        )
    inserted = loop.time()
    rows = await _settled(db, seeded, "delivered", timeout=10)
    assert [r["attempts"] for r in rows] == [1, 2]
    assert len(receiver.received) == 2
    assert loop.time() - inserted >= 1.4  # not before it was due (the clocks' steps aside)


async def test_an_event_held_back_behind_a_retrying_one_is_not_due(
    stub, seeded, db, receiver, monkeypatch: pytest.MonkeyPatch
):
    """The worker asks when the next *claimable* event is due: one queued behind an
    earlier pending event of the same subject waits for it, and counting it as due
    would have the worker ask again every 10 ms for as long as the first backs off."""
    asked: list[float | None] = []
    next_due_in = processor_repository.next_due_in

    async def counted(con):  # type: ignore[no-untyped-def]
        asked.append(await next_due_in(con))
        return asked[-1]

    monkeypatch.setattr(processor_repository, "next_due_in", counted)
    processor_id, _ = await _register(stub, seeded, receiver.url)
    # The first backs off for a minute; the second, queued after it, is "due" now.
    async with db.transaction(seeded) as con:
        await con.execute(
            "INSERT INTO processor_outbox (tenant_id, recipient_id, event_type, subject_id,"
            " payload, attempts, next_attempt_at) VALUES"
            " ($1, $2::uuid, 'subject.erased', 'cust_held', '{}', 1,"
            "  clock_timestamp() + interval '60 seconds'),"
            " ($1, $2::uuid, 'subject.erased', 'cust_held', '{}', 0, clock_timestamp())",
            seeded,
            processor_id,
        )
    try:
        await asyncio.sleep(1.0)
        # A wake-up or two (the insert's NOTIFY, other tests' events), not a spin.
        assert 1 <= len(asked) < 20, asked
        assert receiver.received == []
    finally:
        async with db.transaction(seeded) as con:
            await con.execute("UPDATE processor_outbox SET status = 'dead'")


async def test_a_failing_database_is_retried_at_the_poll_not_at_a_stale_due_time(
    db, monkeypatch: pytest.MonkeyPatch
):
    """A due time the database gave before it failed is long past: the loop waits
    for a wake-up or its poll, not DUE_RECHECK_SECONDS, and does not hammer (and
    log against) a database that is down."""
    claims = 0

    async def failing(con, lease_seconds):  # type: ignore[no-untyped-def]
        nonlocal claims
        claims += 1
        raise ConnectionError("the database is gone")

    monkeypatch.setattr(processor_repository, "claim", failing)
    worker = DeliveryWorker(db, DeliverySettings(), Listener.for_database(db))
    worker._next_due = asyncio.get_running_loop().time() - 1  # as the last idle left it
    task = asyncio.create_task(worker._run())
    try:
        await asyncio.sleep(1.0)
    finally:
        await cancel_and_wait(task)
        if worker._session is not None:
            await worker._session.close()
    # This worker's one attempt (and at most a wake-up of the session server's own).
    assert 1 <= claims <= 3, claims


async def test_no_event_without_a_committed_erasure(stub, channel, seeded, db, receiver):
    await _register(stub, seeded, receiver.url)
    erasure = erasure_pb2_grpc.ErasureServiceStub(channel)
    await erasure.SetLegalHold(
        erasure_pb2.SetLegalHoldRequest(customer_id="cust_00001", reason="CASE-9"),
        metadata=metadata(seeded),
    )
    with pytest.raises(grpc.aio.AioRpcError):
        await erasure.EraseCustomer(
            erasure_pb2.EraseCustomerRequest(customer_id="cust_00001"), metadata=metadata(seeded)
        )
    await erasure.EraseCustomer(
        erasure_pb2.EraseCustomerRequest(customer_id="cust_00002", dry_run=True),
        metadata=metadata(seeded),
    )
    await asyncio.sleep(0.5)
    assert await _outbox(db, seeded) == [] and receiver.received == []


async def test_registration_input(stub, tenant):
    md = metadata(tenant)
    await _register(stub, tenant, "https://processor.example/hooks", name="a")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _register(stub, tenant, "https://processor.example/other", name="a")
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    for url in ("", "ftp://x.example/", "https://", "http://exa mple.com/", "https://x:99999/"):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.RegisterProcessor(
                requests_pb2.RegisterProcessorRequest(name="b", url=url), metadata=md
            )
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, url
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.RegisterProcessor(
            requests_pb2.RegisterProcessorRequest(name="c", url="https://p.example/"),
            metadata=metadata(tenant, "operator"),
        )
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/x",
        "http://10.1.2.3/",
        "http://[::1]/",
        "http://169.254.169.254/",
        "http://localhost:80/",
        "http://127.1/",
        "http://2130706433/",
        "http://0x7f.0.0.1/",
        "http://0177.0.0.1/",
        "http://0/",
        "http://127.0.0.1./",
        "http://LOCALHOST./",
        "http://[::ffff:127.0.0.1]/",
    ],
)
def test_internal_addresses_are_refused_unless_allowed(url: str) -> None:
    with pytest.raises(InvalidArgument):
        validate_url(url, allow_private=False)
    assert validate_url(url, allow_private=True) == url
    assert validate_url("https://processor.example/hooks", allow_private=False)


@pytest.mark.parametrize(
    "url",
    [
        "https://user:secret@processor.example/hooks",
        "https://user@processor.example/hooks",
        "https://:secret@processor.example/hooks",
    ],
)
def test_credentials_in_the_url_are_refused(url: str) -> None:
    for allow_private in (False, True):
        with pytest.raises(InvalidArgument, match="user name or password"):
            validate_url(url, allow_private=allow_private)


@pytest.mark.parametrize(
    "url", ["https://processor.example./hooks", "https://8.8.8.8/", "https://1.2.3.4:8443/x"]
)
def test_global_hosts_are_accepted(url: str) -> None:
    assert validate_url(url, allow_private=False) == url


async def test_a_host_name_resolving_to_loopback_is_not_connected_to(receiver: Receiver) -> None:
    # "localhost" stands for any name an attacker points at the server's network.
    by_name = receiver.url.replace("127.0.0.1", "localhost")
    async with new_session(DeliverySettings(allow_private_urls=False)) as session:
        with pytest.raises(aiohttp.ClientError):
            async with session.post(by_name, data=b"{}"):
                pass
    assert receiver.received == []
    async with (
        new_session(DeliverySettings(allow_private_urls=True)) as session,
        session.post(by_name, data=b"{}") as response,
    ):
        assert response.status == 204
    assert len(receiver.received) == 1


async def test_a_processor_answering_an_endless_body_is_still_delivered(stub, channel, seeded, db):
    async def endless(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(status=200)
        await response.prepare(request)
        with contextlib.suppress(ConnectionError):
            while True:  # until the client goes away
                await response.write(b"x" * 65536)
        return response

    app = web.Application()
    app.router.add_post("/hooks", endless)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        await _register(stub, seeded, f"http://127.0.0.1:{runner.addresses[0][1]}/hooks")
        erasure = erasure_pb2_grpc.ErasureServiceStub(channel)
        await erasure.EraseCustomer(
            erasure_pb2.EraseCustomerRequest(customer_id="cust_00001"), metadata=metadata(seeded)
        )
        rows = await _settled(db, seeded, "delivered")
        assert rows[0]["attempts"] == 1 and rows[0]["last_status"] == 200
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(
    "name", ["", "   ", "crm\n", " crm", "crm ", "c\x1brm", "crm\u202e", "x" * 101]
)
async def test_ambiguous_processor_names_are_refused_and_nothing_is_registered(
    stub, tenant: str, db: Database, name: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.RegisterProcessor(
            requests_pb2.RegisterProcessorRequest(name=name, url="https://p.example/"),
            metadata=metadata(tenant),
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "name" in (caught.value.details() or "")
    async with db.transaction(tenant, readonly=True) as con:
        assert await con.fetchval("SELECT count(*) FROM processor_recipient") == 0
        assert await con.fetchval("SELECT count(*) FROM audit_log") == 0


async def test_a_redirect_is_not_followed(stub, channel, seeded, db, receiver: Receiver) -> None:
    async def redirect(request: web.Request) -> web.Response:
        redirected.append(await request.read())
        raise web.HTTPTemporaryRedirect(receiver.url)

    redirected: list[bytes] = []
    app = web.Application()
    app.router.add_post("/hooks", redirect)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        await _register(stub, seeded, f"http://127.0.0.1:{runner.addresses[0][1]}/hooks")
        erasure = erasure_pb2_grpc.ErasureServiceStub(channel)
        await erasure.EraseCustomer(
            erasure_pb2.EraseCustomerRequest(customer_id="cust_00001"), metadata=metadata(seeded)
        )
        rows = await _settled(db, seeded, "dead")
        # Every attempt ended at the redirect: counted as a failure, never followed.
        assert rows[0]["last_status"] == 307 and len(redirected) == rows[0]["attempts"]
        assert receiver.received == []
    finally:
        await runner.cleanup()


async def test_the_signed_receipt_lists_every_processor_notified(
    stub, channel, seeded, db, receiver, signing_key_path
):
    """GDPR Art. 19: the erasure receipt names each recipient the erasure was
    passed on to (its id, name and the event's id, queued at signing), inside the
    signed payload; `kaireon verify receipt` checks it, and a list changed by one
    character no longer verifies."""
    crm, _ = await _register(stub, seeded, receiver.url, name="crm")
    mail, _ = await _register(stub, seeded, receiver.url, name="mailer")
    erasure = erasure_pb2_grpc.ErasureServiceStub(channel)
    reply = await erasure.EraseCustomer(
        erasure_pb2.EraseCustomerRequest(customer_id="cust_00002"), metadata=metadata(seeded)
    )
    payload = json.loads(reply.receipt.canonical_payload)
    async with db.transaction(seeded, readonly=True) as con:
        events = {
            str(r["recipient_id"]): str(r["id"])
            for r in await con.fetch("SELECT id, recipient_id FROM processor_outbox")
        }
    assert payload["recipients"] == [
        {"processorId": crm, "name": "crm", "eventId": events[crm], "state": "queued"},
        {"processorId": mail, "name": "mailer", "eventId": events[mail], "state": "queued"},
    ]
    public = (signing_key_path.parent / "cosign-test.pub").read_bytes()
    document = json_format.MessageToDict(reply.receipt)  # the receipt alone
    assert verify_receipt(document, public).ok
    # The CLI an auditor runs, on the same JSON.
    path = signing_key_path.parent / f"receipt-{seeded}.json"
    path.write_text(json.dumps(document))
    key = signing_key_path.parent / "cosign-test.pub"
    cli = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "kaireon"),
        "verify",
        "receipt",
        str(path),
        "--key",
        str(key),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await cli.communicate()
    assert cli.returncode == 0, out.decode()
    forged = dict(document)
    forged["canonicalPayload"] = reply.receipt.canonical_payload.replace(
        '"name":"mailer"', '"name":"mailex"'
    )
    report = verify_receipt(forged, public)
    assert not report.ok and report.failed("digest") and report.failed("signature")
    # Dropping a recipient is caught the same way.
    dropped = {**payload, "recipients": payload["recipients"][:1]}
    forged["canonicalPayload"] = canonical_json(dropped).decode()
    assert not verify_receipt(forged, public).ok


async def test_an_ed25519_processor_gets_v1a_signatures_it_verifies_with_its_public_key(
    stub, channel, seeded, db, receiver
):
    """Standard Webhooks asymmetric scheme: the server keeps the private key; the
    processor is shown the whpk_ public key once and verifies `v1a,` signatures
    over `{id}.{timestamp}.{body}` with libsodium (PyNaCl): not the library that
    signed (cryptography)."""
    reply = await stub.RegisterProcessor(
        requests_pb2.RegisterProcessorRequest(
            name="signed-crm", url=receiver.url, signing_scheme="ed25519"
        ),
        metadata=metadata(seeded),
    )
    assert reply.signing_secret == "" and reply.public_key.startswith("whpk_")
    assert reply.processor.signing_scheme == "ed25519"
    verify_key = VerifyKey(base64.b64decode(reply.public_key.removeprefix("whpk_")))
    erasure = erasure_pb2_grpc.ErasureServiceStub(channel)
    await erasure.EraseCustomer(
        erasure_pb2.EraseCustomerRequest(customer_id="cust_00001"), metadata=metadata(seeded)
    )
    await receiver.wait_for(1)
    body, headers = receiver.received[0]
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    [signature] = headers["webhook-signature"].split(" ")
    version, _, value = signature.partition(",")
    assert version == "v1a"
    verify_key.verify(signed, base64.b64decode(value))  # raises if it does not verify
    assert json.loads(body)["type"] == "subject.erased"
    with pytest.raises(BadSignatureError):
        verify_key.verify(signed.replace(b"cust_00001", b"cust_00009"), base64.b64decode(value))
    # The private key never leaves the server: not listed, not audited.
    listed = await stub.ListProcessors(
        requests_pb2.ListProcessorsRequest(), metadata=metadata(seeded)
    )
    assert [(p.name, p.signing_scheme) for p in listed.processors] == [("signed-crm", "ed25519")]
    async with db.transaction(seeded, readonly=True) as con:
        audit = await con.fetchval(
            "SELECT changes::text FROM audit_log WHERE action = 'processor_registered'"
        )
    assert "whsk_" not in audit and "ed25519" in audit


@pytest.mark.parametrize("scheme", ["rsa", "ED25519", "ed25519\n", " ed25519", "hmac "])
async def test_an_unknown_signing_scheme_is_refused(stub, tenant, scheme):
    """The whole string must be a scheme: no case folding, no trimming."""
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.RegisterProcessor(
            requests_pb2.RegisterProcessorRequest(
                name="x", url="https://crm.example/hooks", signing_scheme=scheme
            ),
            metadata=metadata(tenant),
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    listed = await stub.ListProcessors(
        requests_pb2.ListProcessorsRequest(), metadata=metadata(tenant)
    )
    assert list(listed.processors) == []


async def test_processors_get_only_the_events_they_subscribed_to(
    stub, channel, seeded, db, receiver
):
    """subject.exported is queued in the DSAR worker's completing transaction and
    subject.legal_hold in the hold's, to the processors that asked for them; a
    default processor gets neither (only erasures)."""
    _, eraser_secret = await _register(stub, seeded, receiver.url, name="erasures-only")
    reply = await stub.RegisterProcessor(
        requests_pb2.RegisterProcessorRequest(
            name="watcher",
            url=receiver.url,
            events=["subject.exported", "subject.legal_hold"],
        ),
        metadata=metadata(seeded),
    )
    assert list(reply.processor.events) == ["subject.exported", "subject.legal_hold"]
    watcher_secret = reply.signing_secret
    dsar = dsar_pb2_grpc.DsarServiceStub(channel)
    created = await dsar.CreateDsarRequest(
        dsar_pb2.CreateDsarRequestRequest(request_type="export", subject_id="cust_00001"),
        metadata=metadata(seeded),
    )
    holds = erasure_pb2_grpc.ErasureServiceStub(channel)
    await holds.SetLegalHold(
        erasure_pb2.SetLegalHoldRequest(customer_id="cust_00002", reason="CASE-1"),
        metadata=metadata(seeded),
    )
    await holds.ReleaseLegalHold(
        erasure_pb2.ReleaseLegalHoldRequest(customer_id="cust_00002"), metadata=metadata(seeded)
    )
    await receiver.wait_for(3)
    events = [Webhook(watcher_secret).verify(body, headers) for body, headers in receiver.received]
    by_type = sorted((e["type"], e["data"].get("hold", "")) for e in events)
    assert by_type == [
        ("subject.exported", ""),
        ("subject.legal_hold", "placed"),
        ("subject.legal_hold", "released"),
    ]
    exported = next(e for e in events if e["type"] == "subject.exported")
    assert exported["data"] == {"subjectId": "cust_00001", "dsarRequestId": created.request.id}
    # None went to the erasures-only processor (it would not verify with its secret).
    for body, headers in receiver.received:
        with pytest.raises(WebhookVerificationError):
            Webhook(eraser_secret).verify(body, headers)
    await _settled(db, seeded, "delivered")
    # An unknown or repeated event type is refused and nothing is registered.
    for bad in (
        ["subject.deleted"],
        ["subject.erased", "subject.erased"],
        ["subject.erased\n"],
        ["Subject.Erased"],
        [""],
    ):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.RegisterProcessor(
                requests_pb2.RegisterProcessorRequest(name="bad", url=receiver.url, events=bad),
                metadata=metadata(seeded),
            )
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
