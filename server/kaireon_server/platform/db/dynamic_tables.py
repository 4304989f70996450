"""Row-level security on the dynamic customer tables (ds_*), which migrations cannot see.

Migration 0100 protects every tenant table that exists when it runs; a ds_*
table is created later (the demo seed, an operator, a tenant's onboarding). So
the owner connection secures them, the same way 0100 does (RLS enabled, the
`tenant_isolation` policy for the application role, its SELECT/INSERT/UPDATE/
DELETE grants), at two moments:

* when a table is registered through `register_dynamic_table` (the demo seed);
* at every start-up (`secure_dynamic_tables`, from connect_database after the
  migrations), for every ds_* table in the schema that lacks any of it.

Where the migrating role is a superuser, migration 0102's event trigger has
already enabled RLS and the policy at CREATE TABLE; these two then only fill
in what is missing (grants of a table someone else created, a dropped policy).

Both are idempotent and only touch what is missing. Like 0100 the tables are
not FORCEd: the owner (migrations, seeds, this pass) stays outside the
policies, and the policy names only the application role.

A ds_* table without a `tenant_id` column cannot carry the policy. It is
refused, not skipped: RLS is enabled on it with no policy, so the application
role sees no row of it and can write none, and every start logs an error
naming it (a table name is schema, not personal data). Erasure, DSAR and the
flow nodes already refuse such a table by name.

Only the owner role runs this (ALTER TABLE needs ownership); never the pool.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import asyncpg

from kaireon_server.platform.db.identifiers import DYNAMIC_TABLE, check_ident
from kaireon_server.platform.errors import ConfigurationError, FailedPrecondition

log = logging.getLogger(__name__)

# The pool's role, created by migration 0100 (database.APP_ROLE).
_APP_ROLE = "kaireon_app"
POLICY = "tenant_isolation"
# Serialises the pass between processes starting together (KAIREON_WORKERS, replicas).
_LOCK_KEY = 0x6B616973  # "kais"

_PREDICATE = "tenant_id = current_setting('kaireon.tenant_id', true)"

# `qualified` is PostgreSQL's own rendering of the table's name (regclass::text
# quotes it as needed), so any ds_* table, whatever its name, can be secured.
_STATE = r"""
SELECT c.relname, c.oid::regclass::text AS qualified, c.relrowsecurity AS rls,
       EXISTS (SELECT 1 FROM pg_attribute a
                WHERE a.attrelid = c.oid AND a.attname = 'tenant_id'
                  AND a.attnum > 0 AND NOT a.attisdropped) AS has_tenant,
       EXISTS (SELECT 1 FROM pg_policy p
                WHERE p.polrelid = c.oid AND p.polname = $2) AS has_policy,
       (SELECT count(*) FROM pg_policy p
         WHERE p.polrelid = c.oid AND p.polname <> $2) AS other_policies,
       has_table_privilege($1, c.oid, 'SELECT') AND has_table_privilege($1, c.oid, 'INSERT')
         AND has_table_privilege($1, c.oid, 'UPDATE')
         AND has_table_privilege($1, c.oid, 'DELETE') AS granted,
       has_table_privilege($1, c.oid, 'SELECT') OR has_table_privilege($1, c.oid, 'INSERT')
         OR has_table_privilege($1, c.oid, 'UPDATE')
         OR has_table_privilege($1, c.oid, 'DELETE') AS reachable,
       pg_has_role(current_user, c.relowner, 'USAGE') AS can_alter,
       ARRAY(SELECT s.oid::regclass::text FROM pg_depend d
               JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
              WHERE d.classid = 'pg_class'::regclass AND d.refobjid = c.oid
                AND d.deptype IN ('a', 'i')) AS sequences
  FROM pg_class c
  JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'public'
 WHERE c.relkind IN ('r', 'p') AND c.relname LIKE 'ds\_%'
   AND ($3::text[] IS NULL OR c.relname = ANY($3::text[]))
 ORDER BY c.relname
"""


@dataclass
class SecuredTables:
    """What one pass did: tables it changed, and tables refused for lacking tenant_id."""

    secured: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    checked: int = 0


async def secure_dynamic_tables(
    con: asyncpg.Connection, only: list[str] | None = None
) -> SecuredTables:
    """Give every ds_* table (or those named in `only`) what migration 0100 gives a
    tenant table. `con` must be the owner's connection."""
    result = SecuredTables()
    async with con.transaction():
        await con.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_KEY)
        rows = await con.fetch(_STATE, _APP_ROLE, POLICY, only)
        result.checked = len(rows)
        for row in rows:
            await _secure_one(con, row, result)
    if result.secured or result.refused:
        log.info(
            "dynamic tables secured",
            extra={
                "checked": result.checked,
                "secured": len(result.secured),
                "refused": len(result.refused),
            },
        )
    return result


async def _secure_one(con: asyncpg.Connection, row: asyncpg.Record, result: SecuredTables) -> None:
    name, table = str(row["relname"]), str(row["qualified"])
    statements: list[str] = []
    if not row["rls"]:
        statements.append(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
    if row["has_tenant"]:
        if not row["has_policy"]:
            statements.append(
                f"CREATE POLICY {POLICY} ON {table} TO {_APP_ROLE} "
                f"USING ({_PREDICATE}) WITH CHECK ({_PREDICATE})"
            )
        if not row["granted"]:
            statements.append(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {table} TO {_APP_ROLE}")
            statements += [f"GRANT USAGE, SELECT ON {s} TO {_APP_ROLE}" for s in row["sequences"]]
    else:
        result.refused.append(name)
        # Loud on every start, until someone adds the column or drops the table.
        log.error(
            "dynamic table has no tenant_id column: row-level security hides all of it "
            "from the application",
            extra={"table": name},
        )
    if row["other_policies"]:
        # Permissive policies are OR-ed: another one could widen what a tenant sees.
        log.error("dynamic table has policies besides tenant_isolation", extra={"table": name})
    if not statements:
        return
    if not row["can_alter"]:
        if row["reachable"]:
            raise ConfigurationError(
                f"dynamic table {name} is readable or writable by {_APP_ROLE} without "
                "row-level security, and the migrating role does not own it to add it"
            )
        log.warning(
            "dynamic table not owned by the migrating role; left alone (the application "
            "role has no privilege on it)",
            extra={"table": name},
        )
        return
    for statement in statements:
        await con.execute(statement)
    if row["has_tenant"]:
        result.secured.append(name)


async def register_dynamic_table(
    con: asyncpg.Connection,
    *,
    tenant_id: str,
    schema_id: str,
    table_name: str,
    entity_type: str = "customer",
) -> SecuredTables:
    """Register an existing ds_* table for a tenant and secure it, as the owner.
    The registry row and the security commit together (or neither does); a table
    that does not exist or has no tenant_id column is refused."""
    check_ident(table_name, pattern=DYNAMIC_TABLE)
    async with con.transaction():
        await con.execute(
            "INSERT INTO schema_registry (tenant_id, schema_id, table_name, entity_type, active) "
            "VALUES ($1, $2, $3, $4, true) ON CONFLICT DO NOTHING",
            tenant_id,
            schema_id,
            table_name,
            entity_type,
        )
        result = await secure_dynamic_tables(con, only=[table_name])
        if result.checked == 0 or result.refused:
            raise FailedPrecondition(
                f"dynamic table {table_name} does not exist or has no tenant_id column",
                reason="DYNAMIC_TABLE_UNUSABLE",
                metadata={"table": table_name},
            )
        return result
