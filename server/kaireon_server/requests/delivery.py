"""Delivery of processor events: claim a due outbox row (any tenant), POST it
signed per Standard Webhooks, then mark it delivered, retry it later with
exponential backoff, or dead-letter it after the last attempt.

The claim is committed before the POST (a lease: the row's next attempt is
moved past the request timeout), so no transaction stays open across the
network and a worker that dies leaves the row to be claimed again. Receivers
may see an event twice (at-least-once); they deduplicate on `webhook-id`.
Errors are logged by type and status only: URLs and bodies may name people.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import asyncpg

from kaireon_server.platform.audit_chain import append_audit
from kaireon_server.platform.db import Database
from kaireon_server.platform.db.listener import Listener
from kaireon_server.platform.env import EnvReader
from kaireon_server.platform.tasks import cancel_and_wait
from kaireon_server.requests import processor_repository as repository
from kaireon_server.requests import webhooks
from kaireon_server.requests.model import ENTITY_TYPE
from kaireon_server.requests.trail import audit_if_settled

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeliverySettings:
    max_attempts: int = 8
    backoff_seconds: float = 5.0
    max_backoff_seconds: float = 3600.0
    timeout_seconds: float = 10.0
    # Queued events wake the worker (LISTEN); this poll catches retries another
    # process scheduled and notifications missed during a reconnect.
    poll_seconds: float = 30.0
    allow_private_urls: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> DeliverySettings:
        read = EnvReader(env)
        return cls(
            max_attempts=read.integer(
                "KAIREON_PROCESSOR_MAX_ATTEMPTS", cls.max_attempts, minimum=1, maximum=100
            ),
            backoff_seconds=read.number(
                "KAIREON_PROCESSOR_BACKOFF_SECONDS", cls.backoff_seconds, exclusive_minimum=0
            ),
            max_backoff_seconds=read.number(
                "KAIREON_PROCESSOR_MAX_BACKOFF_SECONDS",
                cls.max_backoff_seconds,
                exclusive_minimum=0,
            ),
            timeout_seconds=read.number(
                "KAIREON_PROCESSOR_TIMEOUT_SECONDS", cls.timeout_seconds, exclusive_minimum=0
            ),
            poll_seconds=read.number(
                "KAIREON_PROCESSOR_POLL_SECONDS", cls.poll_seconds, exclusive_minimum=0
            ),
            allow_private_urls=read.boolean(
                "KAIREON_PROCESSOR_ALLOW_PRIVATE_URLS", cls.allow_private_urls
            ),
        )

    def backoff(self, attempts: int) -> float:
        """Seconds before attempt `attempts + 1`: doubling from the base, capped."""
        return float(min(self.max_backoff_seconds, self.backoff_seconds * 2 ** (attempts - 1)))


CHANNEL = "kaireon_processor_outbox"
# The shortest sleep before asking again: a delivery due "now" that the claim
# skipped is locked by another worker's claim, which moves it on when it commits.
DUE_RECHECK_SECONDS = 0.01


class PublicResolver(aiohttp.abc.AbstractResolver):
    """The default resolver, keeping only global addresses: a processor host
    name that resolves to a loopback, private or link-local address is not
    connected to (literal addresses are refused at registration)."""

    def __init__(self) -> None:
        self._inner = aiohttp.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[Any]:
        found = await self._inner.resolve(host, port, family)
        public = [r for r in found if ipaddress.ip_address(r["host"]).is_global]
        if not public:
            raise OSError(f"{host} resolves only to private or loopback addresses")
        return public

    async def close(self) -> None:
        await self._inner.close()


def new_session(settings: DeliverySettings) -> aiohttp.ClientSession:
    timeout = aiohttp.ClientTimeout(total=settings.timeout_seconds)
    if settings.allow_private_urls:
        return aiohttp.ClientSession(timeout=timeout)
    connector = aiohttp.TCPConnector(resolver=PublicResolver())
    return aiohttp.ClientSession(timeout=timeout, connector=connector)


class DeliveryWorker:
    """One delivery loop per process: woken by queued events (LISTEN), when the
    next pending delivery is due by the database's clock (asked whenever there
    is nothing to claim: its own retries, other processes', expired leases),
    and by a slow poll."""

    def __init__(self, db: Database, settings: DeliverySettings, listener: Listener) -> None:
        self._db = db
        self._settings = settings
        self._listener = listener
        self._wake = asyncio.Event()
        # When (loop time) the database said the next pending delivery is due.
        self._next_due: float | None = None
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        listener.subscribe(CHANNEL, lambda _payload: self._wake.set(), self._wake.set)

    async def start(self) -> None:
        await self._listener.start()
        self._task = asyncio.create_task(self._run(), name="processor-delivery")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
        if self._session is not None:
            await self._session.close()
        await self._listener.stop()

    async def _idle(self) -> None:
        """Sleep until woken, the next delivery is due, or the poll."""
        delay = self._settings.poll_seconds
        if self._next_due is not None:
            delay = min(
                delay, max(DUE_RECHECK_SECONDS, self._next_due - asyncio.get_running_loop().time())
            )
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._wake.wait()
        self._wake.clear()

    async def _run(self) -> None:
        self._session = new_session(self._settings)
        while True:
            try:
                worked = await self.deliver_one()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the loop outlives a lost database or a bug
                _log.warning("processor delivery loop error: %s", type(exc).__name__)
                # What the database said is due may be long past: retrying on it
                # every DUE_RECHECK_SECONDS would hammer a database that is down.
                self._next_due = None
                worked = False
            if not worked:
                await self._idle()

    async def deliver_one(self) -> bool:
        """Claim and attempt one due delivery; False when none was due."""
        lease = self._settings.timeout_seconds + 5
        async with self._db.connection() as con, con.transaction():
            claimed = await repository.claim(con, lease)
            due_in = None if claimed is not None else await repository.next_due_in(con)
        if claimed is None:
            loop_now = asyncio.get_running_loop().time()
            self._next_due = None if due_in is None else loop_now + due_in
            return False
        tenant_id, delivery_id = claimed
        async with self._db.transaction(tenant_id, readonly=True) as con:
            delivery = await repository.get_delivery(con, tenant_id, delivery_id)
        if delivery is None:
            return True
        status, error = await self._post(delivery)
        retry_in: float | None = None
        async with self._db.transaction(tenant_id) as con:
            if status is not None and 200 <= status < 300:
                settled = await repository.mark_delivered(con, tenant_id, delivery_id, status)
                if settled is not None and settled[1] is not None:
                    await _audit_acknowledged(
                        con,
                        tenant_id,
                        event_id=delivery_id,
                        http_status=status,
                        processor_id=settled[0],
                        request_id=settled[1],
                    )
            else:
                last = delivery.attempts >= self._settings.max_attempts
                retry_in = None if last else self._settings.backoff(delivery.attempts)
                await repository.mark_failed(
                    con,
                    tenant_id,
                    delivery_id,
                    http_status=status,
                    error=error,
                    retry_in=retry_in,
                )
                _log.info(
                    "processor delivery failed (status %s, %s, attempt %d%s)",
                    status,
                    error,
                    delivery.attempts,
                    ", dead-lettered" if last else "",
                )
        return True

    async def _post(self, delivery: repository.Delivery) -> tuple[int | None, str]:
        assert self._session is not None
        return await post_event(
            self._session, delivery.url, delivery.signing_secret, str(delivery.id), delivery.payload
        )


ACTOR = "processor-delivery"


async def _audit_acknowledged(
    con: asyncpg.Connection,
    tenant_id: str,
    *,
    event_id: uuid.UUID,
    http_status: int,
    processor_id: uuid.UUID,
    request_id: uuid.UUID,
) -> None:
    """An erasure request's event acknowledged: its row, and the request's
    completion when it was the last one unsettled (GDPR Art. 19: the record of
    who was told, and when)."""
    await append_audit(
        con,
        tenant_id,
        action="processor_event_acknowledged",
        entity_type=ENTITY_TYPE,
        entity_id=str(request_id),
        actor=ACTOR,
        changes={
            "processorId": str(processor_id),
            "eventId": str(event_id),
            "httpStatus": http_status,
        },
    )
    await audit_if_settled(con, tenant_id, request_id, ACTOR)


async def post_event(
    session: aiohttp.ClientSession, url: str, secret: str, msg_id: str, payload: str
) -> tuple[int | None, str]:
    """POST one event signed per Standard Webhooks: the status (None: no answer)
    and, unless 2xx, why it failed (a status or an exception's type)."""
    body = payload.encode()
    headers = webhooks.headers(secret, msg_id, int(time.time()), body)
    try:
        async with session.post(url, data=body, headers=headers, allow_redirects=False) as response:
            # Only the status counts; the body (the processor's, of any size)
            # is never read, the connection is simply released.
            return response.status, "" if response.status < 300 else f"HTTP {response.status}"
    except (aiohttp.ClientError, TimeoutError) as exc:
        return None, type(exc).__name__
