"""Source nodes: inline records and read-only SQL over the tenant's tables."""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg

from kaireon_server.flow.nodes.base import (
    Config,
    ConfigError,
    NodeContext,
    NodeError,
    NodeSetup,
    NodeType,
    Records,
    no_dependencies,
)
from kaireon_server.flow.nodes.sql_guard import SqlRejected, guard_query
from kaireon_server.flow.settings import FlowLimits


class InlineSource(NodeType[Records]):
    """`source.inline`: {records: [object, ...]} — the records, as given."""

    name = "source.inline"

    def parse_config(self, config: Mapping[str, Any], setup: NodeSetup) -> Records:
        no_dependencies(setup)
        cfg = Config(config, {"records"})
        records = cfg.value("records")
        if not isinstance(records, list):
            raise ConfigError("records", "must be a list of objects")
        for index, record in enumerate(records):
            if not isinstance(record, Mapping):
                raise ConfigError(f"records[{index}]", "must be an object")
        return [dict(r) for r in records]

    async def run(self, ctx: NodeContext, config: Records, inputs: Mapping[str, Any]) -> Any:
        return [dict(r) for r in config]


@dataclass(frozen=True)
class SqlConfig:
    query: str
    params: tuple[Any, ...]
    max_rows: int
    timeout_ms: int


def _json_value(value: Any) -> Any:
    """asyncpg values as JSON: numbers stay numbers, times become RFC 3339 text."""
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode()
    if isinstance(value, list | tuple):
        return [_json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, asyncpg.Record):
        return {k: _json_value(v) for k, v in value.items()}
    return str(value)


class SqlSource(NodeType[SqlConfig]):
    """`source.sql`: {query, params?, max_rows?, timeout_ms?} — one guarded SELECT.

    See sql_guard for what is accepted. Rows beyond `max_rows` fail the node
    rather than silently truncating the data set.
    """

    name = "source.sql"

    def parse_config(self, config: Mapping[str, Any], setup: NodeSetup) -> SqlConfig:
        no_dependencies(setup)
        limits = FlowLimits.from_env(setup.env)
        cfg = Config(config, {"query", "params", "max_rows", "timeout_ms"})
        query = cfg.text("query")
        params = cfg.value("params", [])
        if not isinstance(params, list) or not all(
            v is None or isinstance(v, str | int | float | bool) for v in params
        ):
            raise ConfigError("params", "must be a list of strings, numbers, booleans or nulls")
        max_rows = cfg.integer(
            "max_rows", limits.sql_max_rows, minimum=1, maximum=limits.sql_max_rows
        )
        timeout_ms = cfg.integer(
            "timeout_ms", limits.sql_timeout_ms, minimum=1, maximum=limits.sql_timeout_ms
        )
        try:
            guard_query(query, params=len(params), allow_any_ds=True)
        except SqlRejected as exc:
            raise ConfigError("query", str(exc)) from None
        return SqlConfig(query, tuple(params), max_rows, timeout_ms)

    async def run(self, ctx: NodeContext, config: SqlConfig, inputs: Mapping[str, Any]) -> Any:
        db = ctx.services.db
        if db is None:
            raise NodeError("source.sql needs a database")
        async with db.transaction(ctx.tenant_id, readonly=True) as con:
            registered = await _registered_tables(con, ctx.tenant_id)
            try:
                guarded = guard_query(config.query, params=len(config.params), readable=registered)
            except SqlRejected as exc:
                raise NodeError(f"query rejected: {exc}") from None
            await _require_tenant_column(con, guarded.tables)
            await con.execute(
                "SELECT set_config('statement_timeout', $1, true)", str(config.timeout_ms)
            )
            try:
                statement = await con.prepare(guarded.sql)
                types = [t.name for t in statement.get_parameters()]
                # PostgreSQL counts parameters up to the highest one used: the
                # tenant ($n+1) is absent when no table is read, trailing unused
                # caller parameters too.
                values = [*config.params, ctx.tenant_id][: len(types)]
                args = [
                    v if i == guarded.tenant_param - 1 else _param(i + 1, types[i], v)
                    for i, v in enumerate(values)
                ]
                cursor = await statement.cursor(*args)
                rows = await cursor.fetch(config.max_rows + 1)
            except asyncpg.QueryCanceledError:
                raise NodeError("query exceeded its timeout", retryable=True) from None
            except asyncpg.PostgresError as exc:
                # The SQLSTATE only: server messages can quote data values.
                raise NodeError(f"query failed (SQLSTATE {exc.sqlstate})") from None
        if len(rows) > config.max_rows:
            raise NodeError(f"query returned more than max_rows ({config.max_rows}) rows")
        records: Records = []
        for row in rows:
            keys = list(row.keys())
            if len(set(keys)) != len(keys):
                raise NodeError("query returns duplicate column names; alias them")
            records.append({k: _json_value(v) for k, v in row.items()})
        return records


_TEXT_TYPES = {"text", "varchar", "bpchar", "name", "unknown"}


def _param(number: int, type_name: str, value: Any) -> Any:
    """A JSON parameter as the Python value asyncpg encodes for the inferred type."""
    if value is None:
        return None
    try:
        if type_name in _TEXT_TYPES:
            return value if isinstance(value, str) else str(value)
        if type_name in ("int2", "int4", "int8"):
            if isinstance(value, bool) or float(value) != int(float(value)):
                raise ValueError
            return int(float(value))
        if type_name in ("float4", "float8"):
            return float(value)
        if type_name == "numeric":
            return decimal.Decimal(str(value))
        if type_name == "bool" and isinstance(value, bool):
            return value
    except (TypeError, ValueError, decimal.InvalidOperation):
        raise NodeError(f"parameter ${number} does not fit type {type_name}") from None
    raise NodeError(
        f"parameter ${number} has type {type_name}: cast it in the query (${number}::text)"
    )


async def _registered_tables(con: asyncpg.Connection, tenant_id: str) -> list[str]:
    rows = await con.fetch(
        "SELECT table_name FROM schema_registry WHERE tenant_id = $1 AND active",
        tenant_id,
    )
    return [str(r["table_name"]) for r in rows]


async def _require_tenant_column(
    con: asyncpg.Connection, tables: set[str] | frozenset[str]
) -> None:
    """Registered ds_* tables must carry tenant_id, or the tenant filter cannot apply."""
    ds_tables = sorted(t for t in tables if t.startswith("ds_"))
    if not ds_tables:
        return
    found = await con.fetch(
        "SELECT table_name FROM information_schema.columns "
        "WHERE table_schema = 'public' AND column_name = 'tenant_id' AND table_name = ANY($1)",
        ds_tables,
    )
    missing = set(ds_tables) - {str(r["table_name"]) for r in found}
    if missing:
        raise NodeError(f"table '{sorted(missing)[0]}' has no tenant_id column")


NODE_TYPES: list[NodeType[Any]] = [InlineSource(), SqlSource()]
