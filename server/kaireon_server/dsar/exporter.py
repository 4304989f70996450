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

from kaireon_server.dsar.plan import TableExport, json_key, utf16_order
from kaireon_server.platform import data_map
from kaireon_server.platform.canonical import canonical_json


class ByteSink(Protocol):
    async def write(self, data: bytes) -> None: ...


class ExportInconsistent(RuntimeError):
    """Rows read differ from rows counted in the same snapshot (should never happen)."""


@dataclass(frozen=True)
class ExportHeader:
    request_id: str
    customer_id: str
    exported_at: str


async def count_rows(con: asyncpg.Connection, plan: Sequence[TableExport]) -> list[int]:
    return [int(await con.fetchval(part.count_sql)) for part in plan]


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
) -> None:
    """Write the whole document to `sink`; `on_rows(n)` reports progress."""
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
        parts = [(p, n) for p, n in zip(plan, counts, strict=True) if p.key == key]
        grouped = key == data_map.DYNAMIC_SCHEMA_EXPORT_KEY
        if grouped:
            await sink.write(b"{")
        for g, (part, expected) in enumerate(parts):
            if grouped:
                assert part.group is not None
                await sink.write(("," if g else "").encode() + json_key(part.group).encode() + b":")
            await sink.write(b"[")
            copier = _CopyRows(sink, on_rows)
            if expected:
                await con.copy_from_query(part.rows_sql, output=copier.feed)
            copier.finish()
            if copier.rows != expected:
                raise ExportInconsistent(f"{part.table}: {copier.rows} rows, {expected} counted")
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
