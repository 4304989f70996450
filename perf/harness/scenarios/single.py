"""Heavy customers one operation at a time, the raw SQL beside the service: COPY of
a customer's rows as JSON beside the DSAR export (then its download), a raw DELETE
beside EraseCustomer (alternating customers, so drift hits both alike), and the
fixed cost of an erasure (a customer with no rows). The exports read first; then
the erasures consume the heavy customers."""

from __future__ import annotations

import resource
from collections.abc import Callable, Coroutine
from functools import partial
from typing import Any

from harness import probes
from harness.procmon import sample_tree
from harness.report import Row, mb
from harness.run import Context, fill_single

ABSENT_CALLS = 20
Probe = Callable[[str], Coroutine[Any, Any, probes.Timed]]  # of a customer (or an export's id)


async def run(ctx: Context) -> list[Row]:
    assert ctx.seed_report is not None
    db, tenant, target = ctx.db, ctx.tenant, ctx.grpc_target
    heavy = list(ctx.seed_report.heavy_rows)
    exported, deletes, erases = heavy[: max(1, len(heavy) // 2)], heavy[0::2], heavy[1::2]
    async with db.owner_connection() as con:
        exported_rows = sum([await probes.count_rows(con, tenant, c) for c in exported])

    async def with_con(fn: Any, *a: Any) -> Any:
        async with db.owner_connection() as con:
            return await fn(con, *a)

    async def timed(row: Row, call: Probe, args: list[str], rows: int | None = None) -> Row:
        """`call` of each of `args`, one after the other, in one window; `rows`: those
        they read (by default, the rows each call says it handled)."""

        def work() -> Row:
            timings = [ctx.on_loop(call(arg)) for arg in args]
            total = sum(t.rows for t in timings) if rows is None else rows
            row.extra["bytes"] = sum(t.bytes for t in timings)
            return fill_single(row, [t.seconds for t in timings], total, timings)

        return await ctx.measure(row, "server", work)

    size = f"{len(exported)} x 1 customer, ~{ctx.plan.heavy_rows:,} rows"
    copy = Row(
        "single.copy.sql",
        "COPY row_to_json TO STDOUT, heavy customer (export ceiling)",
        "asyncpg",
        offered=size,
        unit="rows/s",
    )
    # The client's memory: growth of this process's peak RSS (ru_maxrss, KiB) over the COPY.
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    await timed(copy, partial(with_con, probes.copy_export, tenant), exported)
    if copy.measured:
        growth = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before) * 1024
        copy.extra["client_rss_growth"] = growth
        copy.note = f"client (this harness) peak RSS +{mb(growth)} while reading the COPY"

    def beside_copy(key: str, title: str) -> Row:
        return Row(key, title, "python grpc.aio", size, unit="rows/s", baseline="single.copy.sql")

    export = beside_copy(
        "single.export.grpc", "DSAR export of the same customer (create → completed)"
    )
    rss_before = sample_tree(ctx.server_roots(), full=False).rss
    exporting = partial(probes.dsar_export, target, tenant, timeout=300)
    await timed(ctx.check_served(export, "dsar"), exporting, exported, exported_rows)
    download = beside_copy(
        "single.download.grpc", "DSAR download of that export (StreamDsarExport)"
    )
    download.status = export.status  # no export, no download
    rss_mid = sample_tree(ctx.server_roots(), full=False).rss
    # The export's details are its request ids.
    downloading = partial(probes.dsar_download, target, tenant, timeout=300)
    await timed(download, downloading, export.extra.get("details", []), exported_rows)
    for row, before in ((export, rss_before), (download, rss_mid)):
        if row.measured and row.server_rss is not None:
            row.extra["rss_growth"] = growth = max(0, row.server_rss - before)
            row.note = f"server peak RSS +{mb(growth)} over the phase"

    delete = Row(
        "single.delete.sql",
        "raw DELETE of a heavy customer, 1 transaction (erasure ceiling)",
        "asyncpg",
        offered=f"{len(deletes)} x 1 customer, ~{ctx.plan.heavy_rows:,} rows",
    )
    erase = Row(
        "single.erase.grpc",
        "EraseCustomer of a heavy customer",
        "python grpc.aio",
        offered=f"{len(erases)} x 1 customer, ~{ctx.plan.heavy_rows:,} rows",
        baseline="single.delete.sql",
    )
    absent = Row(
        "single.erase.absent",
        "EraseCustomer of a customer with no rows (the fixed cost)",
        "python grpc.aio",
        offered=f"{ABSENT_CALLS} calls",
    )
    await timed(delete, partial(with_con, probes.raw_delete, tenant), deletes)
    erasing = partial(probes.service_erase, target, tenant)
    await timed(ctx.check_served(erase, "erasure"), erasing, erases)
    await timed(ctx.check_served(absent, "erasure"), erasing, ["perf_absent"] * ABSENT_CALLS)
    return [copy, export, download, delete, erase, absent]
