"""Per-subject delivery order: a processor gets a subject's events in the order
they were queued; a failing event holds back only its own subject's later
events, and once dead-lettered it stops holding them back."""

from __future__ import annotations

import json

from kaireon_server.platform.db import Database
from kaireon_server.requests import processor_repository
from tests.requests.test_processors import Receiver, _register, _settled, receiver  # noqa: F401


async def _queue(db: Database, tenant: str, subject: str, n: int) -> None:
    async with db.transaction(tenant) as con:
        payload = json.dumps({"subject": subject, "n": n})
        queued = await processor_repository.enqueue_for_all(
            con, tenant, "subject.erased", subject, payload
        )
        assert [r.name for r in queued] == ["crm"]


def _arrivals(received: list[tuple[bytes, dict[str, str]]]) -> list[tuple[str, int]]:
    return [(e["subject"], e["n"]) for e in (json.loads(body) for body, _ in received)]


async def test_a_retried_event_holds_back_only_its_subject(stub, db, tenant, receiver: Receiver):  # noqa: F811
    receiver.statuses = [500]  # the first event fails once, then succeeds
    await _register(stub, tenant, receiver.url)
    await _queue(db, tenant, "s1", 1)
    await _queue(db, tenant, "s1", 2)
    await _queue(db, tenant, "s2", 1)
    await _settled(db, tenant, "delivered")
    arrivals = _arrivals(receiver.received)
    s1 = [a for a in arrivals if a[0] == "s1"]
    assert s1 == [("s1", 1), ("s1", 1), ("s1", 2)]
    # s2 is not held back by s1's backoff: it arrives before s1's retry.
    assert arrivals.index(("s2", 1)) < arrivals.index(("s1", 2))


async def test_a_dead_event_unblocks_the_next(stub, db, tenant, receiver: Receiver):  # noqa: F811
    receiver.statuses = [500, 500, 500]  # the test max is 3 attempts
    await _register(stub, tenant, receiver.url)
    await _queue(db, tenant, "s1", 1)
    await _queue(db, tenant, "s1", 2)
    await receiver.wait_for(4)
    assert _arrivals(receiver.received) == [("s1", 1)] * 3 + [("s1", 2)]
    async with db.transaction(tenant, readonly=True) as con:
        rows = await con.fetch("SELECT status FROM processor_outbox ORDER BY seq")
    assert next(r["status"] for r in rows) == "dead"
