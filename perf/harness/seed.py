"""Fast bulk seeding of the perf tenant, in SQL.

The demo seed (kaireon_server.demo.seed) writes customers row by row: right for
50, far too slow for 10k plus 100k-row customers. Here it writes the *template*
customers (with the catalogue, the ds_* tables and the audit rows a provenance
bundle cites), and every other customer is cloned from them by INSERT … SELECT
over generate_series, one statement per table. Populations (disjoint ids, so
one scenario never disturbs another): read customers cust_00001…, the erasure
pool ecust_0000001… (one per erasure) and heavy customers hcust_001….
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import asyncpg

from kaireon_server.demo.seed import SeedSize, seed_tenant
from kaireon_server.platform.db import Database
from kaireon_server.platform.db.identifiers import CATALOGUE_NAME, quote_ident

# Template customers written by the demo seed; every clone copies one of them.
TEMPLATES = 50

# Rows per template row for a heavy customer of 100k rows (scaled linearly for
# other sizes). The template customer has 20 interactions, 3 decisions, 3
# deliveries, 2 attributions, 2 identity links, 2 consents and 1 of the rest,
# so these give about 60k + 9k + 9k + 6k + 5k + 5k + 3k + 2k + 1k = 100k rows
# over the nine platform tables (plus the per-offer summaries and one loyalty row).
HEAVY_MULTIPLIERS: dict[str, int] = {
    "interaction_history": 3000,
    "decision_trace": 3000,
    "delivery": 3000,
    "attribution_result": 3000,
    "suppression": 5000,
    "identity_link": 2500,
    "journey_enrollment": 2000,
    "consent_record": 1500,
    "variant_assignment": 1000,
}
HEAVY_BASE_ROWS = 100_000


@dataclass(frozen=True)
class Population:
    """Customers `prefix + lpad(n, width)` for n in [first, last]."""

    prefix: str
    width: int
    first: int
    last: int
    # Decision ids of these customers: `decision_prefix + lpad(n, width) + "_k"`.
    decision_prefix: str

    @property
    def count(self) -> int:
        return max(0, self.last - self.first + 1)


@dataclass(frozen=True)
class SeedPlan:
    tenant: str
    customers: int
    erasure_pool: int
    heavy_customers: int = 0
    heavy_rows: int = 0

    def read(self) -> Population:
        return Population("cust_", 5, 1, self.customers, "dec_")

    def erasable(self) -> Population:
        return Population("ecust_", 7, 1, self.erasure_pool, "edec_")

    def describe(self) -> str:
        return (
            f"tenant {self.tenant}: {self.customers} customers (~40 rows each, 3 decisions), "
            f"{self.erasure_pool} erasable customers, {self.heavy_customers} heavy customers "
            f"of ~{self.heavy_rows} rows"
        )


@dataclass
class SeedReport:
    seconds: float
    rows: dict[str, int]
    heavy_rows: dict[str, int]  # customer -> rows in the tables erasure deletes from

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())


async def customer_tables(con: asyncpg.Connection, tenant: str) -> list[str]:
    """Every table with tenant_id and customer_id columns (ds_* included), except legal holds."""
    rows = await con.fetch(
        """
        SELECT c.table_name
          FROM information_schema.columns c
          JOIN information_schema.tables t
            ON t.table_schema = c.table_schema AND t.table_name = c.table_name
         WHERE c.table_schema = 'public' AND c.column_name = 'customer_id'
           AND t.table_type = 'BASE TABLE'
           AND EXISTS (SELECT 1 FROM information_schema.columns k
                        WHERE k.table_schema = 'public' AND k.table_name = c.table_name
                          AND k.column_name = 'tenant_id')
         ORDER BY c.table_name
        """
    )
    # A legal hold would block erasure: never clone one.
    return [r["table_name"] for r in rows if r["table_name"] != "legal_hold"]


async def _columns(con: asyncpg.Connection, table: str) -> list[str]:
    rows = await con.fetch(
        """
        SELECT column_name FROM information_schema.columns
         WHERE table_schema = 'public' AND table_name = $1
           AND is_identity = 'NO' AND is_generated = 'NEVER'
         ORDER BY ordinal_position
        """,
        table,
    )
    return [r["column_name"] for r in rows]


def _quote(identifier: str) -> str:
    # Names come from the catalogue: any printable name (a ds_* table's columns too).
    return quote_ident(identifier, pattern=CATALOGUE_NAME)


async def clone_population(
    con: asyncpg.Connection, tenant: str, tables: Sequence[str], pop: Population
) -> int:
    """Clone the template customers into `pop` (customer n copies template 1 + (n-1) mod 50)."""
    if pop.count <= 0:
        return 0
    new_id = f"'{pop.prefix}' || lpad(g::text, {pop.width}, '0')"
    template = f"'cust_' || lpad(((g - 1) % {TEMPLATES} + 1)::text, 5, '0')"
    total = 0
    for table in tables:
        cols = await _columns(con, table)
        exprs = []
        for col in cols:
            if col == "customer_id":
                exprs.append(new_id)
            elif col == "decision_id" or (table == "decision_trace" and col == "id"):
                # dec_00001_2 -> <decision_prefix><n>_2 (characters 10… are "_k").
                exprs.append(
                    f"CASE WHEN t.{_quote(col)} IS NULL THEN NULL ELSE '{pop.decision_prefix}' "
                    f"|| lpad(g::text, {pop.width}, '0') || substr(t.{_quote(col)}, 10) END"
                )
            elif col == "cluster_id":
                exprs.append(f"'cluster_{pop.prefix}' || g::text")
            else:
                exprs.append(f"t.{_quote(col)}")
        sql = (
            f"INSERT INTO {_quote(table)} ({', '.join(map(_quote, cols))}) "
            f"SELECT {', '.join(exprs)} FROM generate_series($2::int, $3::int) AS g "
            f"JOIN {_quote(table)} AS t ON t.tenant_id = $1 AND t.customer_id = {template}"
        )
        status = await con.execute(sql, tenant, pop.first, pop.last)
        total += int(status.rsplit(" ", 1)[-1])
    return total


async def seed_heavy(
    con: asyncpg.Connection, tenant: str, tables: Sequence[str], customer: str, rows: int
) -> int:
    """One customer with ~`rows` rows, cloned from template customer cust_00001."""
    scale = rows / HEAVY_BASE_ROWS
    total = 0
    for table in tables:
        cols = await _columns(con, table)
        multiplier = max(1, round(HEAVY_MULTIPLIERS.get(table, 1) * scale))
        exprs = []
        for col in cols:
            if col == "customer_id":
                exprs.append("$2")
            elif table == "decision_trace" and col == "id":
                exprs.append("'hdec_' || $2 || '_' || g::text || substr(t.id, 10)")
            elif table == "variant_assignment" and col == "experiment_id":
                exprs.append("t.experiment_id || '_' || g::text")
            elif col in ("occurred_at", "decided_at", "sent_at", "linked_at", "recorded_at"):
                exprs.append(f"t.{col} + g * interval '1 second'")
            else:
                exprs.append(f"t.{_quote(col)}")
        sql = (
            f"INSERT INTO {_quote(table)} ({', '.join(map(_quote, cols))}) "
            f"SELECT {', '.join(exprs)} FROM generate_series(1, $3::int) AS g "
            f"JOIN {_quote(table)} AS t ON t.tenant_id = $1 AND t.customer_id = 'cust_00001'"
        )
        status = await con.execute(sql, tenant, customer, multiplier)
        total += int(status.rsplit(" ", 1)[-1])
    return total


async def seed(db: Database, plan: SeedPlan) -> SeedReport:
    started = time.perf_counter()
    templates = min(TEMPLATES, plan.customers)
    # Catalogue, dynamic tables, audit rows and the template customers.
    await seed_tenant(db, plan.tenant, SeedSize(customers=templates))
    heavy: dict[str, int] = {}
    async with db.transaction(plan.tenant) as con:
        tables = await customer_tables(con, plan.tenant)
        # The read customers past the templates are clones of them.
        await clone_population(con, plan.tenant, tables, replace(plan.read(), first=templates + 1))
        await clone_population(con, plan.tenant, tables, plan.erasable())
        for n in range(1, plan.heavy_customers + 1):
            customer = f"hcust_{n:03d}"
            heavy[customer] = await seed_heavy(con, plan.tenant, tables, customer, plan.heavy_rows)
    counts: dict[str, int] = {}
    async with db.owner_connection() as con:  # ANALYZE needs the tables' owner
        for table in tables:
            # The planner needs fresh statistics after a bulk load to pick the indexes.
            await con.execute(f"ANALYZE {_quote(table)}")
            counts[table] = await con.fetchval(
                f"SELECT count(*) FROM {_quote(table)} WHERE tenant_id = $1", plan.tenant
            )
        await con.execute("ANALYZE")
    return SeedReport(time.perf_counter() - started, counts, heavy)
