"""What a soak must leave behind, checked after the load stops: the audit chain
verifies (VerifyChain over gRPC), every DSAR request and flow run is terminal
(waiting, bounded, for the queues to drain), every erased customer has no row
left and every other pool customer all of its seeded rows (never a partial
erasure). Reads go through `Database.transaction(tenant)`, like the server's.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field

import grpc

from harness import probes
from harness.seed import TEMPLATES, Population
from kaireon.audit.v1 import audit_pb2, audit_pb2_grpc
from kaireon_server.platform.db import Database
from kaireon_server.platform.db.identifiers import quote_ident
from kaireon_testkit.server import metadata

# Check name -> (state counts of a queue of the tenant ($1), the states it ends in).
QUEUES: dict[str, tuple[str, tuple[str, ...]]] = {
    "DSAR requests terminal": (
        "SELECT status AS state, count(*) AS n FROM dsar_request WHERE tenant_id = $1 GROUP BY 1",
        ("completed", "failed"),
    ),
    "flow runs terminal": (
        "SELECT state, count(*) AS n FROM flow_run WHERE tenant_id = $1 GROUP BY 1",
        ("succeeded", "failed", "cancelled"),
    ),
}


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    figures: dict[str, object] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.name}: {'ok' if self.ok else 'FAILED'} — {self.detail}"


async def verify_chain(target: str, tenant: str) -> Check:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = audit_pb2_grpc.AuditServiceStub(channel)
        try:
            reply = await stub.VerifyChain(
                audit_pb2.VerifyChainRequest(), metadata=metadata(tenant), timeout=300
            )
        except grpc.aio.AioRpcError as exc:
            return Check("audit chain", False, f"VerifyChain failed: {exc.code().name}")
    detail = f"VerifyChain valid={reply.valid}, {reply.rows_checked:,} rows checked"
    if not reply.valid:
        detail += f"; first invalid seq {reply.first_invalid_seq}: {reply.reason}"
    return Check(
        "audit chain",
        reply.valid,
        detail,
        {"valid": reply.valid, "rows_checked": reply.rows_checked, "reason": reply.reason},
    )


async def queue_terminal(db: Database, tenant: str, name: str, timeout: float) -> Check:
    """The QUEUES[name] states once none is pending, waiting at most `timeout` seconds."""
    sql, terminal = QUEUES[name]
    started = time.monotonic()
    while True:
        async with db.transaction(tenant, readonly=True) as con:
            states = {r["state"]: int(r["n"]) for r in await con.fetch(sql, tenant)}
        waited = time.monotonic() - started
        if all(s in terminal for s in states) or waited >= timeout:
            break
        await asyncio.sleep(1.0)
    total = sum(states.values())
    pending = sum(n for s, n in states.items() if s not in terminal)
    parts = ", ".join(f"{n:,} {s}" for s, n in sorted(states.items()))
    detail = f"{total:,} created: {parts or 'none'}"
    if waited >= 1:
        detail += f" (queue drained {waited:.0f}s after the load)"
    if pending:
        detail += f"; {pending:,} never reached a terminal state"
    return Check(
        name, pending == 0, detail, {"states": states, "waited_s": waited, "created": total}
    )


async def erasure_residue(db: Database, tenant: str, pool: Population) -> Check:
    """Erased pool customers keep 0 rows; the others keep exactly their seeded rows."""
    async with db.transaction(tenant, readonly=True) as con:
        tables = await probes.erased_tables(con, tenant)
        # Pool customers' rows, and the template customers' they were cloned from.
        rows: Counter[str] = Counter()
        for table, column in tables:
            # The seed clones the customer_id tables only (not, e.g., export chunks,
            # which DSAR requests of the soak add to the templates).
            for prefix in (pool.prefix, "cust_") if column == "customer_id" else (pool.prefix,):
                found = await con.fetch(
                    f"SELECT {quote_ident(column)} AS c, count(*) AS n FROM {quote_ident(table)} "
                    f"WHERE tenant_id = $1 AND starts_with({quote_ident(column)}, $2) GROUP BY 1",
                    tenant,
                    prefix,
                )
                rows.update({r["c"]: int(r["n"]) for r in found})
        erased = {
            r["entity_id"]
            for r in await con.fetch(
                "SELECT entity_id FROM audit_log WHERE tenant_id = $1 AND action = 'gdpr_erasure' "
                "AND starts_with(entity_id, $2)",
                tenant,
                pool.prefix,
            )
        }
    left = {c: rows[c] for c in erased if rows[c]}
    partial = {}
    for n in range(pool.first, pool.last + 1):
        customer = f"{pool.prefix}{n:0{pool.width}d}"
        # Pool customer n is a clone of template customer 1 + (n - 1) mod TEMPLATES.
        expected = rows[f"cust_{(n - 1) % TEMPLATES + 1:05d}"]
        if customer not in erased and rows[customer] != expected:
            partial[customer] = (rows[customer], expected)
    detail = (
        f"{len(erased):,} customers erased, {sum(left.values()):,} rows left of them "
        f"in {len(tables)} tables; {pool.count - len(erased):,} not erased, "
        f"{len(partial):,} of them with rows missing"
    )
    return Check(
        "erasures left nothing",
        not left and not partial and len(erased) > 0,
        detail,
        {
            "erased": len(erased),
            "rows_left": sum(left.values()),
            "customers_with_rows_left": sorted(left)[:20],
            "partial": {c: list(v) for c, v in sorted(partial.items())[:20]},
            "tables": len(tables),
        },
    )
