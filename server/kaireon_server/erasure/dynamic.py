"""The tenant's dynamic customer tables (ds_*), read from the schema registry.

Only active registry entries with entity type `customer` count. A table is
erased when it exists and has a `customer_id` column; otherwise it is skipped
and reported (the platform skips such tables silently; we name them). Names
come from the registry, whose CHECK constraint limits them to `ds_[a-z0-9_]`;
they are checked again here and always used quoted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import asyncpg

from kaireon_server.erasure.repository import Target
from kaireon_server.platform.data_map import DYNAMIC_SCHEMA_COUNT_KEY, DYNAMIC_SCHEMA_SUBJECT_COLUMN
from kaireon_server.platform.errors import FailedPrecondition

# The registry's own CHECK pattern (migration 0001).
_REGISTERED_NAME = re.compile(r"ds_[a-z0-9_]{1,59}")

# Subject column types compared directly (an index on the column stays usable);
# any other type is compared as text.
_TEXT_TYPES = frozenset({"text", "character varying", "character"})


@dataclass(frozen=True)
class DynamicTables:
    targets: tuple[Target, ...]
    skipped: tuple[str, ...]


async def resolve(con: asyncpg.Connection, tenant_id: str) -> DynamicTables:
    """The tenant's ds_* tables to erase (sorted by name: the fixed order) and those skipped."""
    rows = await con.fetch(
        """
        SELECT r.table_name,
               cls.oid IS NOT NULL AND cls.relkind IN ('r', 'p') AS is_table,
               format_type(subject.atttypid, NULL) AS subject_type,
               tenant.attnum IS NOT NULL AS has_tenant
          FROM schema_registry r
          LEFT JOIN pg_class cls ON cls.oid = to_regclass(quote_ident(r.table_name))
          LEFT JOIN pg_attribute subject
                 ON subject.attrelid = cls.oid AND subject.attname = $2
                AND subject.attnum > 0 AND NOT subject.attisdropped
          LEFT JOIN pg_attribute tenant
                 ON tenant.attrelid = cls.oid AND tenant.attname = 'tenant_id'
                AND tenant.attnum > 0 AND NOT tenant.attisdropped
         WHERE r.tenant_id = $1 AND r.entity_type = 'customer' AND r.active
         ORDER BY r.table_name
        """,
        tenant_id,
        DYNAMIC_SCHEMA_SUBJECT_COLUMN,
    )
    targets: list[Target] = []
    skipped: list[str] = []
    for row in rows:
        name = str(row["table_name"])
        if not _REGISTERED_NAME.fullmatch(name):
            # The registry's CHECK makes this impossible; refuse rather than build SQL from it.
            raise RuntimeError("schema_registry holds a table name outside its pattern")
        if not row["is_table"] or row["subject_type"] is None:
            skipped.append(name)
            continue
        if not row["has_tenant"]:
            # Deleting by customer id alone would not be tenant-scoped, and
            # skipping would leave personal data behind: refuse, visibly.
            raise FailedPrecondition(
                f"dynamic table {name} has a customer_id column but no tenant_id column; "
                "add one before erasing",
                reason="DYNAMIC_TABLE_WITHOUT_TENANT",
                metadata={"table": name},
            )
        targets.append(
            Target(
                table=name,
                column=DYNAMIC_SCHEMA_SUBJECT_COLUMN,
                count_key=DYNAMIC_SCHEMA_COUNT_KEY,
                compare_as_text=row["subject_type"] not in _TEXT_TYPES,
            )
        )
    return DynamicTables(tuple(targets), tuple(skipped))
