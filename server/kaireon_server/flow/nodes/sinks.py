"""Sink nodes: write records to a registered ds_* table (DSAR / erasure sinks: subjects.py).

The table write runs in the node's checkpoint transaction (NodeContext.transaction):
with the PostgreSQL checkpoint store the rows and the checkpoint commit together,
so a crash or a retry never writes a completed node's rows twice.
"""

from __future__ import annotations

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
    input_option,
    records_of,
)
from kaireon_server.flow.nodes.column_values import ValueMismatch, fit_record
from kaireon_server.flow.nodes.subjects import SUBJECT_NODE_TYPES
from kaireon_server.platform.db.identifiers import DYNAMIC_TABLE, quote_ident


@dataclass(frozen=True)
class TableSinkConfig:
    input: str
    table: str
    mode: str
    key: tuple[str, ...]


class TableSink(NodeType[TableSinkConfig]):
    """`sink.table`: {table: "ds_…", mode?: "insert" | "upsert", key?: [column, ...], input?}.

    The table must be registered (and active) for the tenant in schema_registry;
    identifiers are taken from the catalogue and always quoted. `tenant_id` is
    set to the run's tenant whatever the records say. Record fields that are
    not columns fail the node; missing fields are NULL; values are fitted to
    the column types (column_values.py: 1.0 -> 1 for an integer column, a
    value that does not fit fails the node naming record and field). "upsert" needs `key`
    to match a unique constraint. Output: {table, written}.
    """

    name = "sink.table"

    def parse_config(self, config: Mapping[str, Any], setup: NodeSetup) -> TableSinkConfig:
        cfg = Config(config, {"table", "mode", "key", "input"})
        table = cfg.text("table")
        if not DYNAMIC_TABLE.fullmatch(table):
            raise ConfigError("table", "must be a registered ds_* table name")
        mode = cfg.text("mode", "insert", choices=("insert", "upsert"))
        key = tuple(k for k in cfg.text_list("key", [], non_empty=False) if k != "tenant_id")
        if mode == "upsert" and not key:
            raise ConfigError("key", "is required for mode upsert")
        if mode == "insert" and key:
            raise ConfigError("key", "is only used with mode upsert")
        return TableSinkConfig(input_option(cfg, setup), table, mode, key)

    async def run(
        self, ctx: NodeContext, config: TableSinkConfig, inputs: Mapping[str, Any]
    ) -> Any:
        records = records_of(inputs, config.input)
        con = await ctx.transaction()
        registered = await con.fetchval(
            "SELECT 1 FROM schema_registry WHERE tenant_id = $1 AND table_name = $2 AND active",
            ctx.tenant_id,
            config.table,
        )
        if registered is None:
            raise NodeError(f"table '{config.table}' is not registered for this tenant")
        columns = {
            str(r["column_name"]): str(r["data_type"])
            for r in await con.fetch(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = 'public' AND table_name = $1",
                config.table,
            )
        }
        if "tenant_id" not in columns:
            raise NodeError(f"table '{config.table}' has no tenant_id column")
        used: list[str] = []
        for index, record in enumerate(records):
            for name in record:
                if name not in columns:
                    raise NodeError(f"record {index}: '{name}' is not a column of {config.table}")
                if name != "tenant_id" and name not in used:
                    used.append(name)
        for name in config.key:
            if name not in columns:
                raise NodeError(f"key column '{name}' is not a column of {config.table}")
        if not records:
            return {"table": config.table, "written": 0}
        names = ["tenant_id", *used]
        column_list = ", ".join(quote_ident(c) for c in names)
        sql = (
            f"INSERT INTO {quote_ident(config.table)} ({column_list}) "  # noqa: S608 - catalogue names, quoted
            f"SELECT {column_list} "
            f"FROM jsonb_populate_recordset(NULL::{quote_ident(config.table)}, $1::jsonb)"
        )
        if config.mode == "upsert":
            updates = [c for c in used if c not in config.key]
            conflict = ", ".join(quote_ident(c) for c in ("tenant_id", *config.key))
            action = (
                "DO UPDATE SET "
                + ", ".join(f"{quote_ident(c)} = EXCLUDED.{quote_ident(c)}" for c in updates)
                if updates
                else "DO NOTHING"
            )
            sql += f" ON CONFLICT ({conflict}) {action}"
        rows = []
        for index, record in enumerate(records):
            try:  # API numbers are doubles: 1.0 must reach an integer column as 1
                rows.append({**fit_record(record, columns), "tenant_id": ctx.tenant_id})
            except ValueMismatch as exc:
                raise NodeError(f"record {index}: {exc}") from None
        try:
            status = await con.execute(sql, rows)
        except asyncpg.PostgresError as exc:
            retryable = isinstance(exc, asyncpg.SerializationError | asyncpg.DeadlockDetectedError)
            # The SQLSTATE only: server messages can quote the rejected values.
            raise NodeError(
                f"write failed (SQLSTATE {exc.sqlstate})", retryable=retryable
            ) from None
        return {"table": config.table, "written": int(status.split()[-1])}


NODE_TYPES: list[NodeType[Any]] = [TableSink(), *SUBJECT_NODE_TYPES]
