"""Processors (recipients, GDPR Art. 19): registration, listing, and the
erasure event written to their outbox inside the erasure's transaction."""

from __future__ import annotations

import ipaddress
import json
import socket
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

import asyncpg

from kaireon_server.erasure.model import NotifiedRecipient, validate_customer_id
from kaireon_server.platform.audit_chain import append_audit
from kaireon_server.platform.db import Database
from kaireon_server.platform.errors import AlreadyExists, InvalidArgument, NotFound
from kaireon_server.requests import processor_repository as repository
from kaireon_server.requests import repository as requests_repository
from kaireon_server.requests import webhooks
from kaireon_server.requests.delivery import DeliverySettings, new_session, post_event
from kaireon_server.requests.model import State, parse_uuid
from kaireon_server.requests.processor_repository import Processor

EVENT_ERASED = "subject.erased"
MAX_URL_CHARS = 2048
MAX_NAME_CHARS = 100


def validate_name(name: str) -> str:
    """The processor's unique name exactly as given: no control characters and
    no surrounding spaces, so "crm" and "crm\n" cannot be two processors that
    list alike."""
    name = validate_customer_id(name, "name")
    if len(name) > MAX_NAME_CHARS:
        raise InvalidArgument.field("name", f"must be at most {MAX_NAME_CHARS} characters")
    if name != name.strip():
        raise InvalidArgument.field("name", "must not start or end with spaces")
    return name


def validate_url(url: str, *, allow_private: bool) -> str:
    """An http(s) URL with a host. Unless allowed, a literal loopback, private
    or link-local address (or localhost) is refused: a tenant admin must not
    aim the server's requests at its own network (names that resolve there are
    not caught here; see docs/REQUESTS.md)."""
    if not url or len(url) > MAX_URL_CHARS:
        raise InvalidArgument.field("url", f"is required, at most {MAX_URL_CHARS} characters")
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        _ = parts.port  # a bad port raises ValueError
    except ValueError:
        raise InvalidArgument.field("url", "is not a valid URL") from None
    if parts.scheme not in {"http", "https"} or not host or any(c.isspace() for c in url):
        raise InvalidArgument.field("url", "must be an http or https URL with a host")
    if parts.username is not None or parts.password is not None:
        # Credentials in the URL would be stored, listed and audited in clear text.
        raise InvalidArgument.field("url", "must not hold a user name or password")
    if not allow_private and _internal(host):
        raise InvalidArgument.field("url", "must not point at a private or loopback address")
    return url


def _internal(host: str) -> bool:
    """A literal address that is not global, or localhost. The resolver reads
    the short and numeric IPv4 forms too (`127.1`, `2130706433`, `0x7f.1`,
    `0177.0.0.1`) and ignores a trailing dot, so they are read the same way here."""
    host = host.rstrip(".").lower()
    try:
        return not ipaddress.ip_address(host).is_global
    except ValueError:
        pass
    try:
        return not ipaddress.ip_address(socket.inet_aton(host)).is_global
    except OSError:
        return host == "localhost" or host.endswith(".localhost")


EVENTS = (EVENT_ERASED, "subject.exported", "subject.legal_hold")


def validate_events(events: Sequence[str]) -> tuple[str, ...]:
    """The event types a processor is sent; none given is subject.erased only."""
    if not events:
        return (EVENT_ERASED,)
    unknown = [e for e in events if e not in EVENTS]
    if unknown:
        raise InvalidArgument.field("events", f"must be among {', '.join(EVENTS)}")
    if len(set(events)) != len(events):
        raise InvalidArgument.field("events", "must not repeat an event type")
    return tuple(events)


def validate_scheme(scheme: str) -> str:
    """How a processor's events are signed; empty is the default, "hmac"."""
    if not scheme:
        return webhooks.HMAC
    if scheme not in webhooks.SCHEMES:
        raise InvalidArgument.field(
            "signing_scheme", f"must be one of {', '.join(webhooks.SCHEMES)}"
        )
    return scheme


async def register(
    db: Database,
    *,
    tenant_id: str,
    actor: str,
    name: str,
    url: str,
    allow_private: bool,
    scheme: str = "",
    events: Sequence[str] = (),
) -> tuple[Processor, str]:
    """The processor and what it verifies signatures with, shown only now: the
    shared `whsec_` secret, or the `whpk_` public key (Ed25519; the private key
    stays with the server)."""
    name = validate_name(name)
    url = validate_url(url, allow_private=allow_private)
    scheme = validate_scheme(scheme)
    subscribed = validate_events(events)
    secret = webhooks.new_secret(scheme)
    async with db.transaction(tenant_id) as con:
        processor = await repository.insert_processor(
            con, tenant_id, name=name, url=url, secret=secret, events=subscribed, actor=actor
        )
        if processor is None:
            raise AlreadyExists("a processor of that name exists", reason="PROCESSOR_EXISTS")
        await append_audit(
            con,
            tenant_id,
            action="processor_registered",
            entity_type="processor",
            entity_id=str(processor.id),
            actor=actor,
            changes={
                "name": name,
                "url": url,
                "signingScheme": scheme,
                "events": list(subscribed),
            },
        )
    return processor, secret if scheme == webhooks.HMAC else webhooks.public_key(secret)


async def list_all(db: Database, *, tenant_id: str) -> Sequence[Processor]:
    async with db.transaction(tenant_id, readonly=True) as con:
        return await repository.list_processors(con, tenant_id)


async def erasure_completed_in(
    con: asyncpg.Connection, *, tenant_id: str, subject_id: str, request_id: str, audit_id: str
) -> list[NotifiedRecipient]:
    """The `subject.erased` event for every processor, in the erasure's
    transaction; the processors notified (the receipt lists them). The request
    is then propagating: it stays `in_progress` until every event is settled
    (acknowledged or waived), when a trigger completes it (migration 0153)."""
    payload = json.dumps(
        {
            "type": EVENT_ERASED,
            "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "data": {"subjectId": subject_id, "requestId": request_id, "erasureAuditId": audit_id},
        },
        separators=(",", ":"),
    )
    rid = uuid.UUID(request_id)
    queued = await repository.enqueue_for_all(
        con, tenant_id, EVENT_ERASED, subject_id, payload, request_id=rid
    )
    if queued:
        await requests_repository.update(con, tenant_id, rid, state=State.IN_PROGRESS.value)
    return queued


EVENT_TEST = "webhook.test"


@dataclass(frozen=True)
class TestResult:
    webhook_id: str
    http_status: int | None
    error: str
    latency_ms: int

    @property
    def delivered(self) -> bool:
        return self.http_status is not None and 200 <= self.http_status < 300


async def send_test(
    db: Database,
    settings: DeliverySettings,
    *,
    tenant_id: str,
    actor: str,
    processor_id: str,
) -> TestResult:
    """POST a signed `webhook.test` event to the processor now, as the delivery
    worker would (its session: timeout, no redirects, internal addresses
    refused), and audit the outcome. Nothing is queued or retried."""
    pid = parse_uuid(processor_id, "processor_id")
    async with db.transaction(tenant_id, readonly=True) as con:
        endpoint = await repository.get_endpoint(con, tenant_id, pid)
    if endpoint is None:
        raise NotFound("no processor with this id", reason="PROCESSOR_NOT_FOUND")
    url, secret = endpoint
    msg_id = str(uuid.uuid4())
    payload = json.dumps(
        {
            "type": EVENT_TEST,
            "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "data": {"processorId": str(pid)},
        },
        separators=(",", ":"),
    )
    started = time.perf_counter()
    session = new_session(settings)
    try:
        status, error = await post_event(session, url, secret, msg_id, payload)
    finally:
        await session.close()
    result = TestResult(msg_id, status, error, round((time.perf_counter() - started) * 1000))
    async with db.transaction(tenant_id) as con:
        await append_audit(
            con,
            tenant_id,
            action="processor_tested",
            entity_type="processor",
            entity_id=str(pid),
            actor=actor,
            changes={
                "webhookId": msg_id,
                "httpStatus": status,
                "error": error,
                "delivered": result.delivered,
            },
        )
    return result
