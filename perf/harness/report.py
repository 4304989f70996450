"""The one table perf/run prints, its ratios, and the issue 9 targets read from it."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Row:
    key: str
    scenario: str
    generator: str
    offered: str = ""
    rps: float | None = None
    unit: str = "req/s"
    p50: float | None = None  # milliseconds
    p95: float | None = None
    p99: float | None = None
    errors: int | None = None
    error_rate: float | None = None
    server_cpu: float | None = None  # % of one core, server process tree (+ REST adapter)
    server_rss: int | None = None  # bytes, peak
    pg_cpu: float | None = None
    gen_cpu: float | None = None  # % of one core, the load generator
    baseline: str | None = None  # key of the row the ratios divide by
    status: str = "ok"  # ok | not served | skipped: … | failed: …
    thresholds: str | None = None  # k6 thresholds: ok | crossed: …
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def measured(self) -> bool:
        return self.status == "ok"


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def cpu_per_request(row: Row) -> float | None:
    """Server CPU milliseconds per successful request (req/s rows only).

    On a shared machine throughput and latency move with the other work on it;
    the CPU one request costs the server moves much less, so this is the figure
    to compare across runs (approximate: the CPU window also holds k6's start-up
    and h2load's warm-up, run at the same rate)."""
    if row.server_cpu is None or not row.rps or row.unit != "req/s":
        return None
    return row.server_cpu * 10.0 / row.rps


def ratios(row: Row, rows: dict[str, Row]) -> tuple[float | None, float | None, float | None]:
    base = rows.get(row.baseline or "")
    if base is None or not row.measured or not base.measured:
        return (None, None, None)
    return (_ratio(row.rps, base.rps), _ratio(row.p50, base.p50), _ratio(row.p99, base.p99))


def num(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "-"
    if abs(value) >= 10_000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def ms(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 1000:
        return f"{value / 1000:.2f} s"
    if value >= 10:
        return f"{value:.0f}"
    return f"{value:.2f}"


def times(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def mb(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**20:.0f} MB"


def errors_cell(row: Row) -> str:
    if row.errors is None:
        return "-"
    parts = [] if row.error_rate is None else [f"{row.error_rate * 100:.1f}%"]
    dropped = row.extra.get("dropped")
    if dropped:
        # Not answered wrongly but never sent: k6 had no free VU at the offered time.
        parts.append(f"{dropped} dropped")
    return f"{row.errors}" + (f" ({'; '.join(parts)})" if parts else "")


def markdown(header: Iterable[str], rows: Iterable[Iterable[str]]) -> str:
    """A markdown table; a "|" inside a cell would split it, so it becomes "/"."""
    header = list(header)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in cells) + " |" for cells in rows]
    return "\n".join(lines)


# The columns every load table starts its figures with (perf/run and perf/soak).
LOAD_COLUMNS = ("offered", "achieved", "p50 ms", "p95 ms", "p99 ms", "errors")

HEADER = (
    "scenario",
    "generator",
    *LOAD_COLUMNS,
    "server CPU",
    "CPU ms/req",
    "server peak RSS",
    "PG CPU",
    "generator CPU",
    "baseline (same run)",
    "achieved x",
    "p50 x",
    "p99 x",
)


def table(rows: Iterable[Row]) -> str:
    rows = list(rows)
    by_key = {r.key: r for r in rows}
    lines: list[list[str]] = []
    for row in rows:
        if not row.measured:
            cells = [row.scenario, row.generator, row.offered, row.status] + [""] * (
                len(HEADER) - 4
            )
        else:
            r_rps, r_p50, r_p99 = ratios(row, by_key)
            base = by_key.get(row.baseline or "")
            achieved = "-" if row.rps is None else f"{num(row.rps, 0)} {row.unit}"
            cells = [
                row.scenario,
                row.generator,
                row.offered,
                achieved,
                ms(row.p50),
                ms(row.p95),
                ms(row.p99),
                errors_cell(row),
                "-" if row.server_cpu is None else f"{row.server_cpu:.0f}%",
                num(cpu_per_request(row), 2),
                mb(row.server_rss),
                "-" if row.pg_cpu is None else f"{row.pg_cpu:.0f}%",
                "-" if row.gen_cpu is None else f"{row.gen_cpu:.0f}%",
                base.scenario + f" ({base.generator})" if base else "-",
                times(r_rps),
                times(r_p50),
                times(r_p99),
            ]
        lines.append(cells)
    return markdown(HEADER, lines)


@dataclass
class Target:
    name: str
    measured: str
    target: str
    verdict: str  # met | missed … | not measured …


def _verdict_min(value: float | None, minimum: float, what: str) -> str:
    if value is None:
        return "not measured"
    if value >= minimum:
        return "met"
    return (
        f"missed: {value:.2f}x is {(1 - value / minimum) * 100:.0f}% short of {minimum:g}x ({what})"
    )


def _verdict_max(value: float | None, maximum: float, unit: str, what: str) -> str:
    if value is None:
        return "not measured"
    if value <= maximum:
        return "met"
    return (
        f"missed: {value:.2f}{unit} is {value / maximum:.1f}x "
        f"the {maximum:g}{unit} allowed ({what})"
    )


def targets(rows: list[Row], level: str) -> list[Target]:
    by_key = {r.key: r for r in rows}

    def get(key: str) -> Row | None:
        row = by_key.get(key)
        return row if row is not None and row.measured else None

    def ratio_of(key: str, attr: str, base_key: str) -> float | None:
        row, base = get(key), get(base_key)
        if row is None or base is None:
            return None
        return _ratio(getattr(row, attr), getattr(base, attr))

    out: list[Target] = []
    r = ratio_of("provenance.grpc.h2load", "rps", "echo.h2load")
    out.append(
        Target(
            "provenance bundle over gRPC vs echo ceiling (h2load, closed loop)",
            times(r),
            "≥ 0.25x",
            _verdict_min(r, 0.25, "RPS of GetDecisionProvenance / RPS of bare echo"),
        )
    )
    rest = get("provenance.rest.k6")
    p99 = rest.p99 if rest else None
    out.append(
        Target(
            f"provenance REST p99 at the {level} level (k6)",
            ms(p99) + (" ms" if p99 is not None and p99 < 1000 else ""),
            "< 50 ms at 1K RPS",
            _verdict_max(p99, 50.0, " ms", f"level {level}")
            + ("" if level == "1k" or p99 is None else f" (measured at level {level}, not 1k)"),
        )
    )
    for label, key, base in (
        ("k6, same rate", "provenance.rest.k6", "provenance.grpc.k6"),
        ("h2load, closed loop", "provenance.rest.h2load", "provenance.grpc.h2load"),
    ):
        p50 = ratio_of(key, "p50", base)
        p99r = ratio_of(key, "p99", base)
        out.append(
            Target(
                f"REST adapter latency vs the same gRPC call ({label})",
                f"p50 {times(p50)}, p99 {times(p99r)}",
                "≤ 1.5x",
                _verdict_max(p50, 1.5, "x", "p50"),
            )
        )
    r = ratio_of("single.erase.grpc", "p50", "single.delete.sql")
    out.append(
        Target(
            "erasure of a heavy customer vs raw DELETE of the same rows",
            times(r),
            "≤ 1.5x",
            _verdict_max(r, 1.5, "x", "EraseCustomer time / DELETE time"),
        )
    )
    r = ratio_of("single.export.grpc", "rps", "single.copy.sql")
    export = get("single.export.grpc")
    growth = export.extra.get("rss_growth") if export else None
    out.append(
        Target(
            "DSAR export rows/s vs COPY (SELECT row_to_json …) TO STDOUT",
            times(r) + ("" if growth is None else f", server RSS +{growth / 2**20:.0f} MB"),
            "≥ 0.5x, bounded memory",
            _verdict_min(r, 0.5, "rows/s"),
        )
    )
    flow = get("single.flow.overhead")
    per_node = flow.p50 if flow else None
    verdict = _verdict_max(per_node, 2.0, " ms", "per node")
    if per_node is not None and per_node <= 0:
        # A longer chain finishing sooner than a short one: noise larger than the signal.
        verdict = "not resolved: below this run's noise (use more nodes / a quieter machine)"
    out.append(
        Target(
            "flow runner overhead per no-op node (Postgres store)",
            ms(per_node) + " ms" if per_node is not None else "-",
            "≤ 2 ms",
            verdict,
        )
    )
    return out


def targets_table(items: list[Target]) -> str:
    return markdown(
        ("target", "measured", "wanted", "verdict"),
        ((t.name, t.measured, t.target, t.verdict) for t in items),
    )


def dump(rows: list[Row], extra: dict[str, Any]) -> str:
    by_key = {r.key: r for r in rows}
    out = []
    for row in rows:
        item = asdict(row)
        item["ratio_rps"], item["ratio_p50"], item["ratio_p99"] = ratios(row, by_key)
        item["cpu_ms_per_request"] = cpu_per_request(row)
        out.append(item)
    return json.dumps({"rows": out, **extra}, indent=1, default=str)
