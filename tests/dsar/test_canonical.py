"""The export is RFC 8785 canonical as it streams: SQL-side JCS against the reference."""

from __future__ import annotations

import json
import math

import asyncpg
import pytest
import rfc8785
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kaireon.dsar.v1 import dsar_pb2
from kaireon_server.dsar.exporter import (
    SMALL_EXPORT_ROWS,
    ExportHeader,
    Snapshot,
    count_and_read,
    write_document,
)
from kaireon_server.dsar.jobs import open_export
from kaireon_server.dsar.jsonb_text import Finisher, NumberOutOfRange, canonical_jsonb
from kaireon_server.platform.db import Database
from tests.dsar.conftest import assert_canonical, download, export_of, metadata

CHARS = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**53) + 1, 2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(CHARS, max_size=12)
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(CHARS, max_size=6), inner, max_size=5)
    ),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(value=VALUES)
async def test_sql_jcs_matches_rfc8785_for_any_json(db: Database, value):
    text = json.dumps(value)
    async with db.connection() as con:
        got = await con.fetchval("SELECT kaireon_jcs($1::text::jsonb)", text)
    assert got == rfc8785.dumps(json.loads(text)).decode()


class Raw(str):
    """A number literal written into the JSON text as it is."""


def _dumps(value: object) -> str:
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, list):
        return "[" + ",".join(_dumps(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(json.dumps(k) + ":" + _dumps(v) for k, v in value.items()) + "}"
    return json.dumps(value, ensure_ascii=False)


# Numbers as jsonb stores them: beyond 2^53, long fractions, exponents that
# overflow or underflow a double (which kaireon_jcs refuses), negative zero.
LITERALS = st.from_regex(
    r"-?(0|[1-9][0-9]{0,30})(\.[0-9]{1,25})?([eE][-+]?[0-9]{1,3})?", fullmatch=True
).map(Raw)
WIDE = st.recursive(
    SCALARS | st.integers() | LITERALS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(CHARS, max_size=6), inner, max_size=5)
    ),
    max_leaves=25,
)


async def _finished_as_kaireon_jcs(db: Database, json_text: str) -> None:
    async with db.connection() as con:
        text = await con.fetchval("SELECT $1::text::jsonb::text", json_text)
        try:
            expected = await con.fetchval("SELECT kaireon_jcs($1::text::jsonb)", text)
        except asyncpg.NumericValueOutOfRangeError:
            expected = None
    if expected is None:
        with pytest.raises(NumberOutOfRange):
            canonical_jsonb(text)
    else:
        assert canonical_jsonb(text) == expected


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(value=WIDE)
async def test_python_finishes_jsonb_text_as_kaireon_jcs_does(db: Database, value):
    """A small export's jsonb values, canonicalised in Python from their jsonb
    text, are kaireon_jcs's bytes; a number kaireon_jcs refuses is refused too."""
    await _finished_as_kaireon_jcs(db, _dumps(value))


@pytest.mark.parametrize(
    "literal", ["1e400", "-1e400", "1e-400", "-0.0000e-999", "123456789012345678901234", "-0"]
)
async def test_edge_numbers_agree(db: Database, literal: str):
    await _finished_as_kaireon_jcs(db, f'[{literal}, {{"n": {literal}}}]')


@pytest.mark.parametrize(
    "number",
    [
        0.0,
        -0.0,
        1.0,
        -1.5,
        0.1 + 0.2,
        1e-7,
        1.5e-7,
        1e-6,
        0.000001234,
        1e-4,
        1e15,
        1e16,
        1e20,
        1e21,
        1.5e300,
        5e-324,
        1.7976931348623157e308,
        2.0**53,
        5.339795783989846e16,
        123456.789,
        9.999999999999999e22,
    ],
)
async def test_sql_numbers_format_as_ecmascript(db: Database, number: float):
    async with db.connection() as con:
        got = await con.fetchval("SELECT kaireon_jcs_number($1::float8)", number)
    assert got == rfc8785.dumps(number).decode()


async def test_object_members_are_ordered_by_utf16_code_units(db: Database):
    # U+E000 sorts before U+1F600 by code point, after it by UTF-16 (surrogates).
    value = {"\ue000": 1, "\U0001f600": 2, "a": 3, "\uffff": 4, "\U00010000x": 5, "": 6}
    async with db.connection() as con:
        got = await con.fetchval("SELECT kaireon_jcs($1::text::jsonb)", json.dumps(value))
    assert got == rfc8785.dumps(value).decode()


WEIRD = '"weird ""name"""'  # a column name that needs quoting, quotes included
NASTY = [
    'quote " backslash \\ slash / tab \t newline \n cr \r bell \x07 del \x7f',
    "unicode é ß 中文 emoji 😀 \u2028 \u2029 \ufeff",
    "",
]


async def test_realistic_and_hostile_rows_stream_as_canonical_bytes(stub, tenant, db: Database):
    table = f"ds_{tenant}_profile"
    async with db.owner_connection() as owner:  # the platform creates ds_* tables
        await owner.execute(
            f"""
            CREATE TABLE "{table}" (
                tenant_id text NOT NULL, customer_id text NOT NULL, row_no int NOT NULL,
                note text, score float8, amount numeric(14, 2), big bigint, flag boolean,
                seen_at timestamptz, born date, blob bytea, prefs jsonb, tags text[],
                wait interval, {WEIRD} text,
                PRIMARY KEY (tenant_id, customer_id, row_no))
            """
        )
    async with db.transaction(tenant) as con:
        await con.execute(
            "INSERT INTO schema_registry (tenant_id, schema_id, table_name, entity_type) "
            "VALUES ($1, 'profile', $2, 'customer')",
            tenant,
            table,
        )
        rows = []
        floats = [0.1 + 0.2, 1e-7, 1e21, -0.0, 5e-324, 123456.789, 2.5, None]
        for i, note in enumerate(NASTY * 3):
            prefs = {
                "z": [1, 2.50, {"nested": note}],
                "a": None,
                "\U0001f600": True,
                "\ue000": floats[i % len(floats)],
                "n": -12345678901,
            }
            rows.append(
                (
                    tenant,
                    "subject-1",
                    i,
                    note,
                    floats[i % len(floats)],
                    f"{i}.10",
                    2**60 if i % 2 else -42,
                    i % 2 == 0,
                    None if i == 0 else "2026-05-06T07:08:09.123456+02:00",
                    "1990-02-03",
                    bytes(range(i, i + 40)),
                    json.dumps(prefs),
                    [note, "x"],
                    f"{i} hours",
                    note,
                )
            )
        await con.executemany(
            f'INSERT INTO "{table}" VALUES ($1, $2, $3, $4, $5, $6::text::numeric, $7, $8, '
            "$9::text::timestamptz, $10::text::date, $11, $12::text::jsonb, $13, $14::text::interval, $15)",
            rows,
        )
        await con.execute(
            "INSERT INTO interaction_history (tenant_id, customer_id, offer_id, channel, "
            "event_type, occurred_at, attributes) VALUES ($1, 'subject-1', $2, 'web', 'click', "
            "now(), $3::text::jsonb)",
            tenant,
            NASTY[0],
            json.dumps({"device": NASTY[1], "ratio": 1 / 3}),
        )
    _, document = await export_of(stub, tenant, "subject-1")
    value = assert_canonical(document)
    exported = value["data"]["dynamicSchemaRows"]["profile"]
    assert len(exported) == len(rows) == value["counts"]["dynamicSchemaRows"]
    first, second = exported[0], exported[1]
    assert first["note"] == NASTY[0] and second["note"] == NASTY[1]
    assert first['weird "name"'] == NASTY[0]
    assert math.isclose(first["score"], 0.1 + 0.2) and second["score"] == 1e-7
    assert first["amount"] == 0.1 and first["big"] == -42
    assert second["big"] == str(2**60)  # beyond 2^53: digits kept exactly, as a string
    assert first["seenAt"] is None and second["seenAt"] == "2026-05-06T05:08:09.123456Z"
    assert first["born"] == "1990-02-03" and first["flag"] is True
    assert first["prefs"]["\U0001f600"] is True and first["prefs"]["z"][2]["nested"] == NASTY[0]
    assert first["tags"] == [NASTY[0], "x"]
    interaction = value["data"]["interactions"][0]
    assert interaction["offerId"] == NASTY[0] and interaction["attributes"]["device"] == NASTY[1]


class _Bytes:
    def __init__(self) -> None:
        self.data = bytearray()

    async def write(self, data: bytes) -> None:
        self.data += data


async def _document(db: Database, tenant: str, subject: str, header: ExportHeader, *, small: bool):
    """The export document read as the worker reads it, by one path or the other."""
    async with db.connection() as con, con.transaction(isolation="repeatable_read", readonly=True):
        # The worker's own opening (its erasure lock is harmless here).
        _, plan = await open_export(con, Snapshot(tenant, subject, header.request_id))
        counts, rows = await count_and_read(
            con, plan, small_limit=SMALL_EXPORT_ROWS if small else -1
        )
        sink = _Bytes()
        await write_document(
            con, plan, counts, header, sink=sink, on_rows=lambda _: None, rows=rows
        )
    return bytes(sink.data)


async def test_small_and_streamed_reads_give_the_same_bytes(stub, tenant, db: Database):
    """The one-statement read of a small export and the COPY per table of a large
    one write the same document, byte for byte: the downloaded one."""
    await test_realistic_and_hostile_rows_stream_as_canonical_bytes(stub, tenant, db)
    request = (
        await stub.ListDsarRequests(
            dsar_pb2.ListDsarRequestsRequest(subject_id="subject-1"),
            metadata=metadata(tenant, "operator"),
        )
    ).requests[0]
    downloaded = await download(stub, tenant, request.id)
    value = json.loads(downloaded)
    assert value["counts"]["dynamicSchemaRows"] > 0 and value["counts"]["interactions"] == 1
    header = ExportHeader(request.id, "subject-1", value["exportedAt"])
    small = await _document(db, tenant, "subject-1", header, small=True)
    streamed = await _document(db, tenant, "subject-1", header, small=False)
    assert small == streamed == downloaded


def test_marked_rows_are_finished_once_per_distinct_value_and_a_lone_mark_is_refused():
    finisher = Finisher()
    row = '{"a":\x01{"b": 1.0, "a": [2]}\x01,"c":\x01{"b": 1.0, "a": [2]}\x01}'
    assert finisher.row(row) == '{"a":{"a":[2],"b":1},"c":{"a":[2],"b":1}}'
    assert finisher.row('{"plain":1}') == '{"plain":1}'
    with pytest.raises(ValueError, match="MARK without its pair"):
        finisher.row('{"a":\x01{}}')


def test_a_refused_number_is_not_quoted_in_the_error():
    # The value is the subject's data: the error (logged, stored as the job's
    # failure) must not carry it.
    with pytest.raises(NumberOutOfRange) as refused:
        canonical_jsonb('{"secret": 7e400}')
    assert "7e400" not in str(refused.value) and "secret" not in str(refused.value)
