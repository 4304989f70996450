"""The data map covers every table that holds a data subject's rows, each with a stated reason."""

from __future__ import annotations

from kaireon.erasure.v1 import erasure_pb2
from kaireon_server.platform import data_map
from kaireon_server.platform.data_map import ErasureAction
from kaireon_server.platform.db import Database

SUBJECT_COLUMNS = ("customer_id", "subject_id")


async def _subject_tables(db: Database) -> dict[str, set[str]]:
    """Every base table of the schema with a subject column, except dynamic ds_* tables."""
    async with db.owner_connection() as con:
        rows = await con.fetch(
            """
            SELECT c.table_name, c.column_name
              FROM information_schema.columns c
              JOIN information_schema.tables t USING (table_schema, table_name)
             WHERE c.table_schema = current_schema() AND t.table_type = 'BASE TABLE'
               AND c.column_name = ANY($1::text[]) AND c.table_name NOT LIKE 'ds\\_%'
            """,
            list(SUBJECT_COLUMNS),
        )
    found: dict[str, set[str]] = {}
    for r in rows:
        found.setdefault(r["table_name"], set()).add(r["column_name"])
    return found


async def test_every_table_with_a_subject_column_is_in_the_data_map(db: Database):
    mapped = {t.table: t for t in data_map.TABLES}
    live = await _subject_tables(db)
    missing = sorted(set(live) - set(mapped) - set(data_map.TRANSIENT))
    assert missing == [], f"tables holding subject rows but absent from the data map: {missing}"
    for table, columns in live.items():
        if table not in data_map.TRANSIENT:
            assert mapped[table].subject_column in columns, table


async def test_transient_tables_hold_no_committed_row(db: Database):
    """What the data map's TRANSIENT says of them: other transactions' rows are
    invisible until committed, and a committed one would be an audit row lost."""
    live = await _subject_tables(db)
    async with db.owner_connection() as con:
        for table in data_map.TRANSIENT:
            assert table in live, table
            assert await con.fetchval(f"SELECT count(*) FROM {table}") == 0, table


async def test_the_data_map_names_live_tables_of_this_build(db: Database):
    live = await _subject_tables(db)
    for entry in data_map.TABLES:
        assert entry.table in live, entry.table


def test_every_entry_is_erased_or_kept_with_a_legal_basis():
    for entry in data_map.TABLES:
        if entry.erasure is ErasureAction.DELETE:
            assert entry.count_key, entry.table
            assert entry.legal_basis is None, entry.table
        else:
            assert entry.count_key is None, entry.table
            assert entry.legal_basis and "Art." in entry.legal_basis, entry.table
        # DSAR side: exported under a key, or a stated reason why not.
        assert entry.export_key or entry.export_note, entry.table


def test_count_keys_match_the_response_message():
    fields = [f.json_name for f in erasure_pb2.DeletedCounts.DESCRIPTOR.fields]
    assert list(data_map.count_keys()) == fields
    assert fields[:9] == list(data_map.SEED_COUNT_KEYS)
    # At least delivery and the stored DSAR exports beyond the platform's nine.
    assert {"delivery", "dsarExport"} <= set(fields[9:])
    keys = [t.count_key for t in data_map.erasure_order()]
    assert len(keys) == len(set(keys)), "one table per count key (the ds_* tables share one)"
    assert data_map.DYNAMIC_SCHEMA_COUNT_KEY not in keys


def test_the_deletion_order_starts_with_the_platform_order():
    order = [t.table for t in data_map.erasure_order()]
    assert order[:8] == [
        "interaction_history",
        "interaction_summary",
        "suppression",
        "decision_trace",
        "attribution_result",
        "variant_assignment",
        "identity_link",
        "journey_enrollment",
    ]
    assert [t.table for t in data_map.retained_tables()] == [
        "consent_record",
        "audit_log",
        "dsar_request",
        "subject_request",
        "processor_outbox",
        "legal_hold",
    ]
