"""StreamDecisionProvenance: the bundles of many decisions, for auditors.

Each bundle is a full emission (`ProvenanceEmitter.emit_many`: the stored bytes
or a build, and its own `decision_provenance_emit` audit row, committed before
the bundle is handed out). Emissions run BATCH at a time: one statement reads
the batch (stored bundles, or the rows to build the others from), and their
audit rows go to the group-committing writer together; a batch is sent in order
once all of its rows are committed, while the next batch is read. A client that
cancels mid-stream may leave at most one batch audited but not (wholly) sent
(an audit row says a bundle was emitted, not received).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime

from kaireon_server.platform.auth import Identity
from kaireon_server.platform.db import Database
from kaireon_server.platform.errors import InvalidArgument
from kaireon_server.platform.tasks import cancel_and_wait
from kaireon_server.provenance import repository
from kaireon_server.provenance.emit import (
    Emission,
    Prepared,
    ProvenanceEmitter,
    validate_decision_id,
)

MAX_IDS = 1000
MAX_RANGE = 10_000
BATCH = 64


@dataclass(frozen=True, slots=True)
class Streamed:
    decision_id: str
    emission: Emission | None  # None: no such decision (or another tenant's)


@dataclass(frozen=True, slots=True)
class Selection:
    """What to stream: listed ids, or a time range with a bound."""

    ids: tuple[str, ...] = ()
    start: datetime | None = None
    end: datetime | None = None
    limit: int = MAX_RANGE


def select(
    ids: Sequence[str], start: datetime | None, end: datetime | None, limit: int
) -> Selection:
    """Validate a request: either 1 to MAX_IDS distinct ids, or start < end."""
    if ids and (start is not None or end is not None):
        raise InvalidArgument.field("decision_ids", "give decision ids or a time range, not both")
    if ids:
        if len(ids) > MAX_IDS:
            raise InvalidArgument.field("decision_ids", f"at most {MAX_IDS} ids")
        checked = tuple(validate_decision_id(i) for i in ids)
        if len(set(checked)) != len(checked):
            raise InvalidArgument.field("decision_ids", "each id at most once")
        if limit:
            raise InvalidArgument.field("max_decisions", "only with a time range")
        return Selection(ids=checked)
    if start is None or end is None:
        raise InvalidArgument.field("decision_ids", "give decision ids, or start_time and end_time")
    if start >= end:
        raise InvalidArgument.field("end_time", "must be after start_time")
    if limit < 0 or limit > MAX_RANGE:
        raise InvalidArgument.field("max_decisions", f"0 (the default, {MAX_RANGE}) to {MAX_RANGE}")
    return Selection(start=start, end=end, limit=limit or MAX_RANGE)


async def _ids_in_range(
    db: Database, tenant_id: str, sel: Selection
) -> AsyncGenerator[list[str], None]:
    assert sel.start is not None and sel.end is not None
    after: tuple[datetime, str] | None = None
    left = sel.limit
    while left > 0:
        async with db.transaction(tenant_id, readonly=True) as con:
            page = await repository.decisions_between(
                con, tenant_id, start=sel.start, end=sel.end, after=after, limit=min(BATCH, left)
            )
        if not page:
            return
        yield [decision_id for _, decision_id in page]
        left -= len(page)
        after = page[-1]


async def _listed(sel: Selection) -> AsyncGenerator[list[str], None]:
    for i in range(0, len(sel.ids), BATCH):
        yield list(sel.ids[i : i + BATCH])


async def stream(
    emitter: ProvenanceEmitter, identity: Identity, sel: Selection
) -> AsyncIterator[Streamed]:
    """The selection's emissions in order. A batch is read while the one before
    is audited and sent: the database's and the network's waits overlap, and
    reads never run beside each other (a batch's keeps take the tenant's lock)."""
    batches = _listed(sel) if sel.ids else _ids_in_range(emitter.db, identity.tenant_id, sel)

    async def read() -> tuple[list[str], Prepared] | None:
        batch = await anext(batches, None)
        return None if batch is None else (batch, await emitter.prepare_many(identity, batch))

    ahead = asyncio.create_task(read())
    try:
        while (done := await ahead) is not None:
            ahead = asyncio.create_task(read())
            batch, prepared = done
            emissions = await emitter.audit_prepared(identity, prepared)
            for decision_id, emission in zip(batch, emissions, strict=True):
                yield Streamed(decision_id, emission)
    finally:
        # A client that hung up: the batch read ahead is dropped unaudited; the
        # one being audited may still commit (its rows are shielded), unsent.
        with contextlib.suppress(Exception):  # its failure has no one left to tell
            await cancel_and_wait(ahead)
        await batches.aclose()
