"""What an export reads: one SQL statement per data-map table, built from the live catalog.

Each statement yields one row per subject row: that row as RFC 8785 canonical
JSON text, built inside PostgreSQL (keys sorted, numbers and strings already in
canonical form), so the exporter only concatenates bytes. Column types decide
each value's rendering; tenant_id and the subject column are left out (the
document names the subject once). jsonb values go through kaireon_jcs() once
per distinct value of the subject's rows (a hashed lookup), not once per row:
event attributes repeat a lot, and the function is the expensive part.

A small export, read in one statement (exporter.count_and_read), leaves the
jsonb values to Python instead: its rows carry each value's jsonb text between
two MARK characters, which canonical JSON and jsonb text never hold raw (they
escape every control character), and the exporter canonicalises them
(jsonb_text.py). PL/pgSQL's kaireon_jcs was most of PostgreSQL's time for a
small export; json.loads and the C encoder take a fraction of it. A large
export keeps the SQL-side path: COPY streams its rows as they are.

Statements read the tenant and subject from `kaireon.tenant_id` and
`kaireon.dsar_subject` (set per transaction), so no personal value is ever
spliced into SQL text.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from kaireon_server.platform import data_map
from kaireon_server.platform.canonical import canonical_json
from kaireon_server.platform.db.identifiers import CATALOGUE_NAME, quote_ident

TENANT = "current_setting('kaireon.tenant_id')"
SUBJECT = "current_setting('kaireon.dsar_subject')"
REQUEST = "current_setting('kaireon.dsar_request')::uuid"

# Per-table column choices: internal bookkeeping is not the subject's data.
_INCLUDE_ONLY: dict[str, tuple[str, ...]] = {
    "dsar_request": (
        "id",
        "request_type",
        "status",
        "encrypt",
        "created_at",
        "completed_at",
        "error",
        "export_digest",
    ),
}
_EXCLUDE: dict[str, frozenset[str]] = {
    # Salts would only let someone brute-force digests; the values are there in clear.
    "audit_log": frozenset({"entity_id_salt", "personal_salts"}),
}
# What was held before this request: the request being answered (still in
# progress) and its own audit rows are not part of the subject's data yet.
# Access rows (an export shown or downloaded) are the controller's record of
# handling the subject's own requests, not data about the subject's
# relationship with the tenant: left out, so reading an export never makes the
# next one grow (docs/DSAR.md, "Which audit rows an export holds").
_EXTRA_FILTER: dict[str, str] = {
    "dsar_request": f"t.id <> {REQUEST}",
    "audit_log": (
        "NOT (t.entity_type = 'dsar_request' AND t.entity_id IS NOT DISTINCT FROM "
        "current_setting('kaireon.dsar_request')) "
        "AND t.action <> 'dsar_export_downloaded'"
    ),
}

_INTEGER = {"int2", "int4", "oid"}
_FLOAT = {"float4", "float8", "numeric"}
_STRING = {"text", "varchar", "bpchar", "name", "uuid", "citext", "inet", "cidr", "macaddr"}
MAX_SAFE_INTEGER = 2**53 - 1
# Around a jsonb value's text in a small export's rows (see the module's doc).
MARK = "\x01"


@dataclass(frozen=True)
class Column:
    name: str
    type_name: str


@dataclass(frozen=True)
class TableExport:
    """One table's part of the export: `data[key]` (or `data[key][group]`)."""

    key: str
    group: str | None
    table: str
    subject_column: str
    rows_sql: str
    count_sql: str
    # The same rows with jsonb values as MARKed jsonb text, for Python to finish.
    marked_rows_sql: str


def sql_literal(text: str) -> str:
    # standard_conforming_strings is on in the export transaction: only ' needs doubling.
    return "'" + text.replace("'", "''") + "'"


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def utf16_order(key: str) -> bytes:
    """Sort key for RFC 8785 member order (UTF-16 code units)."""
    return key.encode("utf-16-be", "surrogatepass")


def json_key(key: str) -> str:
    """The canonical JSON string of an object key."""
    return canonical_json(key).decode()


def jsonb_sql(expr: str, *, marked: bool) -> str:
    """Canonical JSON text of a jsonb expression, or its MARKed jsonb text."""
    if marked:
        return f"(chr(1) || ({expr})::text || chr(1))"
    return f"kaireon_jcs({expr})"


def value_sql(column: Column, ref: str, *, marked: bool = False) -> str:
    """SQL rendering one column's value as canonical JSON text (never NULL)."""
    t = column.type_name
    if t == "bool":
        expr = f"CASE WHEN {ref} THEN 'true' ELSE 'false' END"
    elif t in _INTEGER:
        expr = f"{ref}::text"
    elif t == "int8":
        # Beyond 2^53 a JSON number would not survive a double: send digits as a string.
        expr = (
            f"CASE WHEN abs({ref}) <= {MAX_SAFE_INTEGER} THEN {ref}::text "
            f"ELSE to_json({ref}::text)::text END"
        )
    elif t in _FLOAT:
        expr = (
            f"CASE WHEN {ref} IN ('NaN', 'Infinity', '-Infinity') THEN to_json({ref}::text)::text "
            f"ELSE kaireon_jcs_number({ref}::float8) END"
        )
    elif t in _STRING:
        expr = f"to_json({ref}::text)::text"
    elif t == "timestamptz":
        expr = (
            f"""'"' || to_char({ref} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') || '"'"""
        )
    elif t == "timestamp":
        expr = f"""'"' || to_char({ref}, 'YYYY-MM-DD"T"HH24:MI:SS.US') || '"'"""
    elif t == "date":
        expr = f"""'"' || to_char({ref}, 'YYYY-MM-DD') || '"'"""
    elif t == "bytea":
        expr = f"""'"' || translate(encode({ref}, 'base64'), E'\\n', '') || '"'"""
    else:
        # Arrays, enums, intervals, composites, json: through jsonb.
        expr = jsonb_sql(f"to_jsonb({ref})", marked=marked)
    return f"coalesce({expr}, 'null')"


def build_table_sql(
    table: str,
    subject_column: str,
    columns: Sequence[Column],
    order_by: Sequence[str],
    extra_filter: str | None = None,
    *,
    marked: bool = False,
) -> tuple[str, str]:
    """(rows statement, count statement) for one table; `marked`: jsonb values
    left as MARKed jsonb text (a small export's read)."""
    q_table = quote_ident(table)
    where = f"t.tenant_id = {TENANT} AND t.{quote_ident(subject_column)} = {SUBJECT}"
    if extra_filter:
        where += f" AND {extra_filter}"
    ctes: list[str] = []
    joins: list[str] = []
    members: list[tuple[str, str]] = []
    for i, column in enumerate(columns):
        ref = f"t.{quote_ident(column.name, pattern=CATALOGUE_NAME)}"
        if column.type_name in ("jsonb", "json") and marked:
            # Python canonicalises each distinct text once (jsonb_text.Finisher).
            members.append(
                (camel(column.name), f"coalesce({jsonb_sql(f'{ref}::jsonb', marked=True)}, 'null')")
            )
        elif column.type_name in ("jsonb", "json"):
            alias = f"j{i}"
            ctes.append(
                f"{alias} AS MATERIALIZED (SELECT v, kaireon_jcs(v) AS c FROM "  # noqa: S608
                f"(SELECT DISTINCT {ref}::jsonb AS v FROM {q_table} t WHERE {where}) d)"
            )
            joins.append(f"LEFT JOIN {alias} ON {alias}.v = {ref}::jsonb")
            members.append((camel(column.name), f"coalesce({alias}.c, 'null')"))
        else:
            members.append((camel(column.name), value_sql(column, ref, marked=marked)))
    members.sort(key=lambda m: utf16_order(m[0]))
    keys = [m[0] for m in members]
    if len(set(keys)) != len(keys):
        raise ValueError(f"{table}: two columns map to the same JSON key")
    parts = []
    for n, (key, expr) in enumerate(members):
        literal = ("{" if n == 0 else ",") + json_key(key) + ":"
        parts.append(f"{sql_literal(literal)} || {expr}")
    body = " || ".join(parts) + " || '}'" if parts else "'{}'"
    order = ", ".join(f"t.{quote_ident(c, pattern=CATALOGUE_NAME)}" for c in order_by)
    # Identifiers are quoted and literals escaped above; values come from settings.
    select = f"SELECT {body} FROM {q_table} t {' '.join(joins)} WHERE {where}"  # noqa: S608
    rows_sql = (
        (f"WITH {', '.join(ctes)} " if ctes else "")
        + select
        + (f" ORDER BY {order}" if order else "")
    )
    count_sql = f"SELECT count(*) FROM {q_table} t WHERE {where}"  # noqa: S608 - identifiers quoted
    return rows_sql, count_sql


# The columns and primary-key columns of the mapped tables ({tables}) and of
# the tenant's registered customer tables ({tenant}, those with the subject
# column {column}), in one statement: the fixed cost of a small export is round
# trips, not rows. The slots are filled with parameter numbers: the worker runs
# it inside the statement that also takes the erasure lock (jobs.py).
CATALOGUE_SQL = """
    SELECT w.name, w.schema_id, a.attname, t.typname,
           coalesce(a.attnum = ANY(i.indkey), false) AS in_pk
      FROM (SELECT n.name, NULL::text AS schema_id FROM unnest({tables}::text[]) AS n(name)
            UNION ALL
            SELECT r.table_name, r.schema_id FROM schema_registry r
             WHERE r.tenant_id = {tenant} AND r.active AND r.entity_type = 'customer'
               AND EXISTS (SELECT 1 FROM pg_attribute s
                            WHERE s.attrelid = to_regclass(quote_ident(r.table_name))
                              AND s.attname = {column} AND NOT s.attisdropped)) w
      JOIN pg_attribute a ON a.attrelid = to_regclass(quote_ident(w.name))
                         AND a.attnum > 0 AND NOT a.attisdropped
      JOIN pg_type t ON t.oid = a.atttypid
      LEFT JOIN pg_index i ON i.indrelid = a.attrelid AND i.indisprimary
     ORDER BY w.name, w.schema_id, a.attnum
"""


def mapped_tables() -> list[str]:
    """The data map's exported tables: the catalogue statement's {tables}."""
    return [entry.table for entry in data_map.TABLES if entry.export_key is not None]


def plan_from_catalogue(rows: Sequence[asyncpg.Record]) -> list[TableExport]:
    """The statements of one export, in document order (canonical key order),
    from CATALOGUE_SQL's rows: a mapped table this deployment lacks is absent
    from them, and so is a registered table dropped meanwhile."""
    catalogue: dict[tuple[str, str | None], tuple[list[Column], list[str]]] = {}
    for r in rows:
        columns, primary = catalogue.setdefault((r["name"], r["schema_id"]), ([], []))
        columns.append(Column(r["attname"], r["typname"]))
        if r["in_pk"] and r["attname"] != "tenant_id":
            primary.append(r["attname"])
    plan: list[TableExport] = []
    for entry in data_map.TABLES:
        if entry.export_key is None or (entry.table, None) not in catalogue:
            continue  # not exported, or another capability's table this deployment lacks
        columns, primary = catalogue[(entry.table, None)]
        plan.append(
            _table_export(
                entry.export_key,
                None,
                table=entry.table,
                subject_column=entry.subject_column,
                columns=tuple(columns),
                primary=tuple(primary),
            )
        )
    for (table, schema_id), (columns, primary) in catalogue.items():
        if schema_id is None:
            continue
        plan.append(
            _table_export(
                data_map.DYNAMIC_SCHEMA_EXPORT_KEY,
                schema_id,
                table=table,
                subject_column=data_map.DYNAMIC_SCHEMA_SUBJECT_COLUMN,
                columns=tuple(columns),
                primary=tuple(primary),
            )
        )
    plan.sort(key=lambda p: (utf16_order(p.key), utf16_order(p.group or "")))
    return plan


@functools.lru_cache(maxsize=256)
def _table_export(
    key: str,
    group: str | None,
    *,
    table: str,
    subject_column: str,
    columns: tuple[Column, ...],
    primary: tuple[str, ...],
) -> TableExport:
    """One table's statements; cached by the catalogue's answer (same columns,
    same text), so a busy worker does not rebuild them for every export."""
    include = _INCLUDE_ONLY.get(table)
    skip = {"tenant_id", subject_column} | _EXCLUDE.get(table, frozenset())
    chosen = [c for c in columns if c.name not in skip and (include is None or c.name in include)]
    order = [c for c in primary if c != subject_column] or [c.name for c in chosen[:1]]
    extra = _EXTRA_FILTER.get(table)
    rows_sql, count_sql = build_table_sql(table, subject_column, chosen, order, extra)
    marked_sql, _ = build_table_sql(table, subject_column, chosen, order, extra, marked=True)
    return TableExport(key, group, table, subject_column, rows_sql, count_sql, marked_sql)
