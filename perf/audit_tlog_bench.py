"""Audit appends per second with the transparency log integrating, and append-to-checkpoint latency.

Standalone: creates a scratch database on the given PostgreSQL (migrated like the
server's), appends audit rows from concurrent writers through the server's group
commit (`AuditBatcher`) while the server's `Integrator` signs checkpoints with a
throwaway Ed25519 key, and prints:

- appends/s (committed rows over the run);
- for every row, the time from its commit to the first checkpoint covering it
  (p50, p99, max), and the share checkpointed within 1 s.

    .venv/bin/python perf/audit_tlog_bench.py \\
        --admin-dsn postgresql://postgres@127.0.0.1:5432/postgres --seconds 10

The scratch database is dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import time

import asyncpg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from kaireon_server.audit.tlog import NOTIFY_CHANNEL, Integrator, TlogSettings
from kaireon_server.platform.audit_chain import AuditBatcher, AuditRow
from kaireon_server.platform.config import Settings
from kaireon_server.platform.db import connect_database
from kaireon_server.platform.db.listener import Listener


def _dsn_with_database(dsn: str, name: str) -> str:
    base, _, _ = dsn.rpartition("/")
    return f"{base}/{name}"


async def run(admin_dsn: str, seconds: float, writers: int, interval: float) -> None:
    name = f"kaireon_tlog_bench_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(admin_dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        db = await connect_database(
            Settings(database_url=_dsn_with_database(admin_dsn, name), trust_headers=True)
        )
        settings = TlogSettings(
            log_name="bench.example", log_key=Ed25519PrivateKey.generate(), interval=interval
        )
        integrator = Integrator(db, settings)
        # Woken by the append notifications, as in the server.
        listener = Listener.for_database(db)
        listener.subscribe(NOTIFY_CHANNEL, integrator.wake, integrator.wake)
        await listener.start()
        batcher = AuditBatcher(db)
        tenant = "bench"
        committed: dict[int, float] = {}  # seq -> commit time
        checkpointed: dict[int, float] = {}  # seq -> first checkpoint covering it
        stop = time.monotonic() + seconds

        async def writer(w: int) -> None:
            i = 0
            while time.monotonic() < stop:
                record = await batcher.append(
                    tenant,
                    AuditRow(
                        action="bench_append",
                        entity_type="customer",
                        entity_id=f"cust_{w}_{i}",
                        actor="bench",
                        changes={"i": i},
                        personal={"email": f"p{w}.{i}@example.com"},
                        entity_id_is_personal=True,
                        subject_id=f"cust_{w}_{i}",
                    ),
                )
                committed[record.seq] = time.monotonic()
                i += 1

        async def watch() -> None:
            seen = 0
            while True:
                async with db.transaction(tenant, readonly=True) as con:
                    size = await con.fetchval(
                        "SELECT coalesce(max(size), 0) FROM audit_tlog_checkpoint "
                        "WHERE tenant_id = $1",
                        tenant,
                    )
                now = time.monotonic()
                for seq in range(seen + 1, int(size) + 1):
                    checkpointed[seq] = now
                seen = max(seen, int(size))
                await asyncio.sleep(0.01)

        integrator.start()
        watcher = asyncio.create_task(watch())
        started = time.monotonic()
        await asyncio.gather(*(writer(w) for w in range(writers)))
        elapsed = time.monotonic() - started
        total = len(committed)
        for _ in range(600):  # at most 30 s for the last rows to be checkpointed
            if len(checkpointed) >= total:
                break
            await asyncio.sleep(0.05)
        watcher.cancel()
        await integrator.stop()
        await listener.stop()
        await batcher.close()
        lat = sorted(
            max(0.0, checkpointed[s] - t) for s, t in committed.items() if s in checkpointed
        )
        within = sum(1 for x in lat if x <= 1.0)
        print(f"rows appended:          {total} in {elapsed:.1f} s with {writers} writers")
        print(f"appends/s:              {total / elapsed:.0f}")
        print(f"rows checkpointed:      {len(lat)} of {total}")
        if lat:
            q = statistics.quantiles(lat, n=100) if len(lat) > 1 else [lat[0]] * 99
            print(
                f"commit -> checkpoint:   p50 {q[49] * 1000:.0f} ms, p99 {q[98] * 1000:.0f} ms, "
                f"max {lat[-1] * 1000:.0f} ms"
            )
            print(f"checkpointed within 1 s: {100 * within / total:.1f}%")
        await db.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--admin-dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--writers", type=int, default=64)
    parser.add_argument("--interval", type=float, default=5.0, help="fallback poll (s)")
    args = parser.parse_args()
    asyncio.run(run(args.admin_dsn, args.seconds, args.writers, args.interval))


if __name__ == "__main__":
    main()
