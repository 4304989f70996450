"""Streams one subject's export document as RFC 8785 canonical JSON bytes.

The document is written in canonical member order, so its bytes are its
canonical form and the digest is taken while it streams:

    {"counts":{…},"customerId":…,"data":{"attributionResults":[…],…,
     "dynamicSchemaRows":{"<schemaId>":[…]},…},"encrypted":false,
     "exportedAt":…,"requestId":…}

Counts come first (RFC 8785 puts "counts" before "data"), so they are counted
up front in the same REPEATABLE READ snapshot the rows are then read from:
they equal the rows that follow. Rows arrive through COPY … TO STDOUT, one
canonical JSON text per line; COPY's text format escapes only backslashes in
them (JSON text holds no raw control characters), which is undone here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import asyncpg

from kaireon_server.dsar.jsonb_text import Finisher
from kaireon_server.dsar.plan import TableExport, json_key, utf16_order
from kaireon_server.platform import data_map
from kaireon_server.platform.canonical import canonical_json, format_timestamp


class ByteSink(Protocol):
    async def write(self, data: bytes) -> None: ...


class ExportInconsistent(RuntimeError):
    """Rows read differ from rows counted in the same snapshot (should never happen)."""


@dataclass(frozen=True)
class ExportHeader:
    request_id: str
    customer_id: str
    exported_at: str


# Up to this many rows an export is read in one statement (one array per table)
# instead of one COPY per table: a small export's cost is its round trips.
SMALL_EXPORT_ROWS = 2000


# What the plan's statements read, set for the open transaction: $1 tenant,
# $2 subject, $3 request, $4 statement timeout, $5 idle-in-transaction timeout
# (0 = none). The idle bound ends the session of a worker stalled mid-export,
# so it cannot hold its snapshot and table locks (and everything queued behind
# them) until its process dies.
SNAPSHOT_SETTINGS = (
    "set_config('kaireon.tenant_id', $1, true), "
    "set_config('kaireon.dsar_subject', $2, true), "
    "set_config('kaireon.dsar_request', $3, true), "
    "set_config('TimeZone', 'UTC', true), "
    "set_config('extra_float_digits', '1', true), "
    "set_config('standard_conforming_strings', 'on', true), "
    "set_config('statement_timeout', $4, true), "
    "set_config('idle_in_transaction_session_timeout', $5, true)"
)


@dataclass(frozen=True)
class Snapshot:
    """The values of SNAPSHOT_SETTINGS for one export."""

    tenant_id: str
    subject_id: str
    request_id: str
    statement_timeout_ms: int = 0
    idle_timeout_ms: int = 0

    def arguments(self) -> tuple[str, str, str, str, str]:
        return (
            self.tenant_id,
            self.subject_id,
            self.request_id,
            str(self.statement_timeout_ms),
            str(self.idle_timeout_ms),
        )


async def start_snapshot(con: asyncpg.Connection, snapshot: Snapshot) -> str:
    """Set SNAPSHOT_SETTINGS (for the open transaction); returns this
    statement's start, the `exportedAt` of a snapshot taken at it."""
    row = await con.fetchrow(
        f"SELECT {SNAPSHOT_SETTINGS}, statement_timestamp() AS now", *snapshot.arguments()
    )
    assert row is not None
    return format_timestamp(row["now"])


def count_and_read_sql(plan: Sequence[TableExport], small_limit: int) -> str:
    """The statement of count_and_read.

    The limit is written in, not a parameter: a statement without parameters
    gets PostgreSQL's generic plan at once, and planning this one costs more
    than running it for a small export."""
    # The parts are statements built by plan.py from quoted identifiers.
    counts = "ARRAY[" + ", ".join(f"({part.count_sql})" for part in plan) + "]::bigint[]"
    arrays = ", ".join(f"CASE WHEN c.small THEN ARRAY({part.marked_rows_sql}) END" for part in plan)
    # MATERIALIZED and OFFSET 0 keep the counts computed once: inlined, each
    # reference to them (the sum, every CASE) would be a copy of the subqueries.
    return (
        "WITH c AS MATERIALIZED (SELECT k.n, "  # noqa: S608
        f"(SELECT sum(x) FROM unnest(k.n) x) <= {int(small_limit)} AS small "
        f"FROM (SELECT {counts} AS n OFFSET 0) k) "
        f"SELECT c.n, {arrays} FROM c"
    )


async def count_and_read(
    con: asyncpg.Connection, plan: Sequence[TableExport], *, small_limit: int = SMALL_EXPORT_ROWS
) -> tuple[list[int], list[list[str]] | None]:
    """Every table's count and, when they add up to at most `small_limit`, every
    table's rows (canonical JSON texts, in order), in one statement; their
    jsonb values are canonicalised here (plan.py, MARK).

    A large export's rows are then streamed by COPY instead (rows None): its row
    subqueries sit in a branch not taken, which PostgreSQL never runs."""
    if not plan:
        return [], []
    row = await con.fetchrow(count_and_read_sql(plan, small_limit))
    assert row is not None
    counts = [int(n) for n in row[0]]
    if row[1] is None:
        return counts, None
    finisher = Finisher()
    return counts, [[finisher.row(text) for text in texts] for texts in row[1:]]


def counts_by_key(plan: Sequence[TableExport], counts: Sequence[int]) -> dict[str, int]:
    totals: dict[str, int] = {data_map.DYNAMIC_SCHEMA_EXPORT_KEY: 0}
    for part, n in zip(plan, counts, strict=True):
        totals[part.key] = totals.get(part.key, 0) + n
    return totals


class _CopyRows:
    """COPY output -> comma-joined JSON texts, written to the sink."""

    def __init__(self, sink: ByteSink, on_rows: Callable[[int], None]) -> None:
        self._sink = sink
        self._on_rows = on_rows
        self._carry = b""
        self.rows = 0

    async def feed(self, chunk: bytes) -> None:
        data = self._carry + chunk if self._carry else chunk
        cut = data.rfind(b"\n")
        if cut < 0:
            self._carry = data
            return
        self._carry = data[cut + 1 :]
        block = data[:cut]
        n = block.count(b"\n") + 1
        out = block.replace(b"\\\\", b"\\").replace(b"\n", b",")
        await self._sink.write(out if self.rows == 0 else b"," + out)
        self.rows += n
        self._on_rows(n)

    def finish(self) -> None:
        if self._carry:
            raise ExportInconsistent("COPY output ended inside a row")


async def write_document(
    con: asyncpg.Connection,
    plan: Sequence[TableExport],
    counts: Sequence[int],
    header: ExportHeader,
    *,
    sink: ByteSink,
    on_rows: Callable[[int], None],
    rows: Sequence[Sequence[str]] | None = None,
) -> None:
    """Write the whole document to `sink`; `on_rows(n)` reports progress.

    With `rows` (read_small's answer) the rows come from there; otherwise each
    table is streamed by COPY."""
    totals = counts_by_key(plan, counts)
    await sink.write(
        b'{"counts":'
        + canonical_json(totals)
        + b',"customerId":'
        + canonical_json(header.customer_id)
        + b',"data":{'
    )
    keys = sorted(totals, key=utf16_order)
    for k, key in enumerate(keys):
        await sink.write(("," if k else "").encode() + json_key(key).encode() + b":")
        parts = [
            (i, p, n) for i, (p, n) in enumerate(zip(plan, counts, strict=True)) if p.key == key
        ]
        grouped = key == data_map.DYNAMIC_SCHEMA_EXPORT_KEY
        if grouped:
            await sink.write(b"{")
        for g, (i, part, expected) in enumerate(parts):
            if grouped:
                assert part.group is not None
                await sink.write(("," if g else "").encode() + json_key(part.group).encode() + b":")
            await sink.write(b"[")
            if rows is not None:
                got = len(rows[i])
                if got:
                    await sink.write(",".join(rows[i]).encode())
                    on_rows(got)
            else:
                copier = _CopyRows(sink, on_rows)
                if expected:
                    await con.copy_from_query(part.rows_sql, output=copier.feed)
                copier.finish()
                got = copier.rows
            if got != expected:
                raise ExportInconsistent(f"{part.table}: {got} rows, {expected} counted")
            await sink.write(b"]")
        if grouped:
            await sink.write(b"}")
    await sink.write(
        b'},"encrypted":false,"exportedAt":'
        + canonical_json(header.exported_at)
        + b',"requestId":'
        + canonical_json(header.request_id)
        + b"}"
    )
