"""Heavy customers one operation at a time, the raw SQL beside the service: COPY of
a customer's rows as JSON beside the DSAR export (then its download), a raw DELETE
beside EraseCustomer (alternating customers, so drift hits both alike), and the
fixed cost of an erasure (a customer with no rows). The exports read first; then
the erasures consume the heavy customers."""

from __future__ import annotations

import resource
from typing import Any

from harness import probes
from harness.procmon import sample_tree
from harness.report import Row, mb
from harness.run import Context, fill_single

ABSENT_CALLS = 20


async def run(ctx: Context) -> list[Row]:
    assert ctx.seed_report is not None
    db, tenant, target = ctx.db, ctx.tenant, ctx.grpc_target
    heavy = list(ctx.seed_report.heavy_rows)
    rows_of = {}
    async with db.owner_connection() as con:
        for c in heavy:
            rows_of[c] = await probes.count_rows(con, tenant, c)

    async def with_con(fn: Any, *a: Any) -> Any:
        async with db.owner_connection() as con:
            return await fn(con, *a)

    def timed(row: Row, calls: list[Any], rows: int | None = None) -> Row:
        timings = [ctx.on_loop(call) for call in calls]
        total = sum(t.rows for t in timings) if rows is None else rows
        row.extra["bytes"] = sum(t.bytes for t in timings)
        return fill_single(row, [t.seconds for t in timings], total, timings)

    exported = heavy[: max(1, len(heavy) // 2)]
    size = f"{len(exported)} x 1 customer, ~{ctx.plan.heavy_rows:,} rows"
    exported_rows = sum(rows_of[c] for c in exported)
    copy = Row(
        "single.copy.sql",
        "COPY row_to_json TO STDOUT, heavy customer (export ceiling)",
        "asyncpg",
        offered=size,
        unit="rows/s",
    )
    # The client's memory: growth of this process's peak RSS (ru_maxrss, KiB) over the COPY.
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    copy = await ctx.measure(
        copy,
        "server",
        lambda: timed(copy, [with_con(probes.copy_export, tenant, c) for c in exported]),
    )
    if copy.measured:
        growth = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before) * 1024
        copy.extra["client_rss_growth"] = growth
        copy.note = f"client (this harness) peak RSS +{mb(growth)} while reading the COPY"

    export = Row(
        "single.export.grpc",
        "DSAR export of the same customer (create → completed)",
        "python grpc.aio",
        offered=size,
        unit="rows/s",
        baseline="single.copy.sql",
    )
    request_ids: list[str] = []

    def export_work() -> Row:
        calls = [probes.dsar_export(target, tenant, c, timeout=300) for c in exported]
        filled = timed(export, calls, exported_rows)
        request_ids.extend(filled.extra["details"])
        return filled

    rss_before = sample_tree(ctx.server_roots(), full=False).rss
    export = await ctx.measure(ctx.check_served(export, "dsar"), "server", export_work)
    download = Row(
        "single.download.grpc",
        "DSAR download of that export (StreamDsarExport)",
        "python grpc.aio",
        offered=size,
        unit="rows/s",
        baseline="single.copy.sql",
    )
    if not export.measured:
        download.status = export.status
    rss_mid = sample_tree(ctx.server_roots(), full=False).rss

    def download_work() -> Row:
        calls = [probes.dsar_download(target, tenant, r, timeout=300) for r in request_ids]
        return timed(download, calls, exported_rows)

    download = await ctx.measure(download, "server", download_work)
    for row, before in ((export, rss_before), (download, rss_mid)):
        if row.measured and row.server_rss is not None:
            row.extra["rss_growth"] = growth = max(0, row.server_rss - before)
            row.note = f"server peak RSS +{mb(growth)} over the phase"

    deletes, erases = heavy[0::2], heavy[1::2]
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
    delete = await ctx.measure(
        delete,
        "server",
        lambda: timed(delete, [with_con(probes.raw_delete, tenant, c) for c in deletes]),
    )
    for row, customers in ((erase, erases), (absent, ["perf_absent"] * ABSENT_CALLS)):

        def erasing(row: Row = row, customers: list[str] = customers) -> Row:
            return timed(row, [probes.service_erase(target, tenant, c) for c in customers])

        await ctx.measure(ctx.check_served(row, "erasure"), "server", erasing)
    return [copy, export, download, delete, erase, absent]
