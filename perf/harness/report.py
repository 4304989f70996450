"""The one table perf/run prints and its ratios (the targets read from it: harness/targets.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")


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
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def measured(self) -> bool:
        return self.status == "ok"


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


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
    return (ratio(row.rps, base.rps), ratio(row.p50, base.p50), ratio(row.p99, base.p99))


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
    if dropped := row.extra.get("dropped"):
        # Not answered wrongly but never sent: k6 had no free VU at the offered time.
        parts.append(f"{dropped} dropped")
    return f"{row.errors}" + (f" ({'; '.join(parts)})" if parts else "")


def markdown(header: Iterable[str], rows: Iterable[Iterable[str]]) -> str:
    """A markdown table; a "|" inside a cell would split it, so it becomes "/"."""
    header = list(header)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in cells) + " |" for cells in rows]
    return "\n".join(lines)


def columns_table(columns: Sequence[tuple[str, Callable[[T], str]]], rows: Iterable[T]) -> str:
    """A markdown table of `rows`: a column per (header, the cell it shows of a row)."""
    return markdown([h for h, _ in columns], ([cell(r) for _, cell in columns] for r in rows))


def percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}%"


def table(rows: Iterable[Row]) -> str:
    rows = list(rows)
    by_key = {r.key: r for r in rows}

    def baseline(row: Row) -> str:
        base = by_key.get(row.baseline or "")
        return f"{base.scenario} ({base.generator})" if base else "-"

    columns: list[tuple[str, Callable[[Row], str]]] = [
        ("scenario", lambda r: r.scenario),
        ("generator", lambda r: r.generator),
        ("offered", lambda r: r.offered),
        ("achieved", lambda r: "-" if r.rps is None else f"{num(r.rps, 0)} {r.unit}"),
        ("p50 ms", lambda r: ms(r.p50)),
        ("p95 ms", lambda r: ms(r.p95)),
        ("p99 ms", lambda r: ms(r.p99)),
        ("errors", errors_cell),
        ("server CPU", lambda r: percent(r.server_cpu)),
        ("CPU ms/req", lambda r: num(cpu_per_request(r), 2)),
        ("server peak RSS", lambda r: mb(r.server_rss)),
        ("PG CPU", lambda r: percent(r.pg_cpu)),
        ("generator CPU", lambda r: percent(r.gen_cpu)),
        ("baseline (same run)", baseline),
        ("achieved x", lambda r: times(ratios(r, by_key)[0])),
        ("p50 x", lambda r: times(ratios(r, by_key)[1])),
        ("p99 x", lambda r: times(ratios(r, by_key)[2])),
    ]

    def cells(r: Row) -> list[str]:
        if r.measured:
            return [cell(r) for _, cell in columns]
        # A row that measured nothing shows its status where its figures would start.
        return [r.scenario, r.generator, r.offered, r.status] + [""] * (len(columns) - 4)

    return markdown([h for h, _ in columns], map(cells, rows))


def rows_json(rows: list[Row]) -> list[dict[str, Any]]:
    """The rows for results.json: every field, the ratios and the CPU per request."""
    by_key = {r.key: r for r in rows}
    out = []
    for row in rows:
        item = asdict(row)
        item["ratio_rps"], item["ratio_p50"], item["ratio_p99"] = ratios(row, by_key)
        item["cpu_ms_per_request"] = cpu_per_request(row)
        out.append(item)
    return out
