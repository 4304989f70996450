"""The soak's figures: one row per k6 scenario (operation x protocol x phase)
from the per-scenario sub-metrics of the summary, the resource series read
from the timeline, and the saturation verdict of the burst.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from harness.k6 import Reading, read
from harness.procmon import Growth, Timeline
from harness.report import columns_table, markdown, mb, ms
from harness.soak_plan import SoakPlan

OP_TITLES = {
    "provenance": "provenance read",
    "erasure": "erasure of a fresh customer",
    "dsar": "DSAR create + watch to terminal",
    "flow": "flow run start",
}
# A refusal whose median is slower than this is not "at once": the caller waited
# to be told no (the p99 also holds the event loop's lag on a saturated machine).
FAST_REFUSAL_P50_MS = 100.0


@dataclass(kw_only=True)
class OpRow(Reading):
    scenario: str
    phase: str
    op: str
    protocol: str
    planned: int  # rate x duration
    seconds: float
    per_second: float

    @property
    def offered(self) -> int:
        # What k6 actually started or dropped (it may start one more than planned).
        return self.requests + self.dropped

    @property
    def ok(self) -> int:
        return self.outcomes.get("ok", max(0, self.requests - self.errors))

    @property
    def other(self) -> int:
        """Failed calls neither refused nor timed out."""
        return sum(n for o, n in self.outcomes.items() if o not in ("ok", "shed", "timeout"))

    @property
    def achieved(self) -> float:
        return self.ok / self.seconds if self.seconds > 0 else 0.0

    @property
    def title(self) -> str:
        proto = "gRPC" if self.protocol == "grpc" else "REST"
        return f"{OP_TITLES[self.op]}, {proto}"


def rows(metrics: dict[str, Any], plan: SoakPlan) -> list[OpRow]:
    """A row per scenario of the plan, read from its sub-metrics."""
    return [
        OpRow(
            **vars(read(metrics, f"scenario:{s.name}", s.latency)),
            scenario=s.name,
            phase=s.phase,
            op=s.op,
            protocol=s.protocol,
            planned=s.offered,
            seconds=s.seconds,
            per_second=s.per_second,
        )
        for s in plan.scenarios
    ]


def phase_totals(op_rows: list[OpRow]) -> dict[str, tuple[int, int]]:
    """phase -> (calls offered, errors), in phase order."""
    out: dict[str, tuple[int, int]] = {}
    for r in op_rows:
        calls, errors = out.get(r.phase, (0, 0))
        out[r.phase] = (calls + r.offered, errors + r.error_count)
    return out


def phase_summary(totals: dict[str, tuple[int, int]]) -> str:
    return "; ".join(
        f"{phase}: {calls:,} calls, {errors:,} errors ({errors / max(1, calls) * 100:.2f}%)"
        for phase, (calls, errors) in totals.items()
    )


def _outcomes_cell(row: OpRow) -> str:
    parts = [f"{o} {n}" for o, n in row.outcomes.items() if o != "ok"]
    if row.dropped:
        parts.append(f"dropped {row.dropped}")
    return ", ".join(parts) or "-"


def _latency_pair(row: OpRow, outcome: str) -> str:
    p50, p99 = row.outcome_latency.get(outcome, (None, None))
    return "-" if p50 is None else f"{ms(p50)} / {ms(p99)}"


OPS_COLUMNS: list[tuple[str, Callable[[OpRow], str]]] = [
    ("phase", lambda r: r.phase),
    ("operation", lambda r: r.title),
    ("offered", lambda r: f"{r.offered:,} ({r.per_second:.3g}/s x {r.seconds:g}s)"),
    ("achieved", lambda r: f"{r.achieved:.2f}/s"),
    ("p50 ms", lambda r: ms(r.p50)),
    ("p95 ms", lambda r: ms(r.p95)),
    ("p99 ms", lambda r: ms(r.p99)),
    ("errors", lambda r: f"{r.error_count:,}"),
    ("error rate", lambda r: f"{r.error_rate * 100:.2f}%"),
    ("failures by kind", _outcomes_cell),
]
# Per operation of the burst: what was answered, refused, or left waiting.
BURST_COLUMNS: list[tuple[str, Callable[[OpRow], str]]] = [
    ("operation", lambda r: r.title),
    ("offered", lambda r: f"{r.offered:,}"),
    ("OK", lambda r: f"{r.ok:,}"),
    ("OK p50 / p99 ms", lambda r: _latency_pair(r, "ok")),
    ("refused (RESOURCE_EXHAUSTED / 429)", lambda r: f"{r.outcomes.get('shed', 0):,}"),
    ("refused p50 / p99 ms", lambda r: _latency_pair(r, "shed")),
    ("deadline reached", lambda r: f"{r.outcomes.get('timeout', 0):,}"),
    ("other errors", lambda r: f"{r.other:,}"),
    ("not started (k6 out of VUs)", lambda r: f"{r.dropped:,}"),
]


@dataclass(frozen=True)
class Failure:
    t: float  # seconds from the load's start
    scenario: str
    outcome: str
    ms: int


_FAILURE = re.compile(r"soak-failure (\d+) (\S+) (\S+) (\d+)")


def failures(output: str, started: float) -> list[Failure]:
    """The failed calls k6/soak.js logged, on the load's clock."""
    return [
        Failure(int(m[1]) / 1000 - started, m[2], m[3], int(m[4]))
        for m in _FAILURE.finditer(output)
    ]


def _phase_at(plan: SoakPlan, t: float) -> str:
    return next((p.name for p in plan.phases if p.start <= t < p.end), "after")


def failures_table(items: list[Failure], flips: list[float], plan: SoakPlan) -> str:
    """Failed calls and NOT_SERVING reports per minute (per 5 s in a short run)."""
    total = plan.phases[-1].end
    step = 60.0 if total >= 300 else 5.0

    def row(start: float, end: float) -> tuple[str, ...]:
        kinds = Counter(f.outcome for f in items if start <= f.t < end)
        return (
            f"{start:g}-{min(end, total):g}s",
            _phase_at(plan, start),
            f"{kinds.total():,}",
            ", ".join(f"{k} {n}" for k, n in kinds.most_common()) or "-",
            f"{sum(1 for t in flips if start <= t < end)}",
        )

    rows = [row(i * step, (i + 1) * step) for i in range(math.ceil(total / step))]
    return (
        "Failed calls over time (answered with an error; iterations k6 could not start "
        "are only counted, in the table above):\n\n"
        + markdown(("time", "phase", "failed calls", "by kind", "health NOT_SERVING"), rows)
    )


@dataclass(frozen=True)
class Series:
    key: str
    title: str
    unit: str  # "bytes" | "count" | "percent"

    def show(self, value: float | None) -> str:
        if value is None:
            return "-"
        if self.unit == "percent":
            return f"{value:.0f}%"
        return mb(int(value)) if self.unit == "bytes" else f"{value:,.0f}"

    def growth(self, g: Growth) -> str:
        if g.first is None or g.last is None:
            return "-"
        growth = g.last - g.first
        sign = "+" if growth >= 0 else "-"
        if self.unit == "percent":
            # A change of load, not a growth: in points of one core.
            return f"{sign}{abs(growth):.0f} points"
        size = mb(int(abs(growth))) if self.unit == "bytes" else f"{abs(growth):,.1f}"
        pct = f" ({100.0 * growth / g.first:+.1f}%)" if g.first else ""
        return f"{sign}{size}{pct}"


# Per process tree: (key suffix, title, unit); "{}" is the tree's name.
TREE_SERIES = (
    ("cpu", "{} CPU, % of one core", "percent"),
    ("rss", "{} RSS (process tree)", "bytes"),
    ("pss", "{} PSS (shared pages split)", "bytes"),
    ("fds", "{} open fds (process tree)", "count"),
    ("inbound", "... of them client connections (k6's)", "count"),
    ("own_fds", "... of them the server's own (files, pipes, PG)", "count"),
    ("processes", "{} processes", "count"),
)
GAUGE_SERIES = (
    ("pg.server_connections", "PostgreSQL connections of the server"),
    ("pg.pool_connections", "... of them in the pools"),
    ("pg.dedicated_connections", "... of them dedicated (LISTEN, flow run locks)"),
    ("pg.active", "PostgreSQL connections active"),
    ("pg.waiting_lock", "PostgreSQL backends waiting on a lock"),
)


@dataclass
class ResourceRow:
    series: Series
    steady: Growth
    burst_peak: float | None
    recovery_end: float | None


def resources(timeline: Timeline, plan: SoakPlan, window: float) -> list[ResourceRow]:
    phases = {p.name: p for p in plan.phases}
    steady, burst, recovery = phases["steady"], phases.get("burst"), phases.get("recovery")
    keys = {key for sample in timeline.samples for key in sample.values}
    series = [
        Series(f"{group}.{suffix}", text.format(title), unit)
        for group, title in (("server", "server"), ("pg", "PostgreSQL"), ("k6", "k6"))
        for suffix, text, unit in TREE_SERIES
        if f"{group}.{suffix}" in keys and (group, suffix) != ("k6", "pss")
    ]
    series += [Series(key, title, "count") for key, title in GAUGE_SERIES if key in keys]

    def recovered(key: str) -> float | None:
        end = timeline.series(key, recovery.end - window, recovery.end) if recovery else []
        return end[-1] if end else None

    return [
        ResourceRow(
            s,
            timeline.growth(s.key, steady.start, steady.end, window),
            timeline.peak(s.key, burst.start, burst.end) if burst else None,
            recovered(s.key),
        )
        for s in series
    ]


def resources_table(items: list[ResourceRow]) -> str:
    window = next((r.steady.window for r in items), 60.0)
    columns: list[tuple[str, Callable[[ResourceRow], str]]] = [
        ("series", lambda r: r.series.title),
        (f"steady: first {window:g}s", lambda r: r.series.show(r.steady.first)),
        (f"steady: last {window:g}s", lambda r: r.series.show(r.steady.last)),
        ("growth", lambda r: r.series.growth(r.steady)),
        ("steady mean", lambda r: r.series.show(r.steady.mean)),
        ("steady peak", lambda r: r.series.show(r.steady.peak)),
        ("burst peak", lambda r: r.series.show(r.burst_peak)),
        ("after recovery", lambda r: r.series.show(r.recovery_end)),
    ]
    return columns_table(columns, items)


def duration(value: float | None) -> str:
    """A latency with its unit: "12 ms", "5.86 s"."""
    text = ms(value)
    return text if value is None or text.endswith(" s") else f"{text} ms"


def _span(values: list[float | None]) -> str:
    """The range of a figure over the protocols: "12 ms" or "10 ms to 20 ms"."""
    present = sorted(v for v in values if v is not None)
    if not present:
        return "-"
    low, high = duration(present[0]), duration(present[-1])
    return low if low == high else f"{low} to {high}"


def _worst(values: list[float | None]) -> float | None:
    return max((v for v in values if v is not None), default=None)


@dataclass
class BurstCalls:
    """The calls of some burst rows by how they ended."""

    offered: int
    ok: int
    shed: int
    timeouts: int
    dropped: int
    other: int


def _sums(rows: list[OpRow]) -> dict[str, int]:
    return {
        "offered": sum(r.offered for r in rows),
        "ok": sum(r.ok for r in rows),
        "shed": sum(r.outcomes.get("shed", 0) for r in rows),
        "timeouts": sum(r.outcomes.get("timeout", 0) for r in rows),
        "dropped": sum(r.dropped for r in rows),
        "other": sum(r.other for r in rows),
    }


@dataclass
class OpSaturation(BurstCalls):
    """One operation in the burst, both protocols together."""

    op: str
    shed_p50: list[float | None]
    shed_p99: list[float | None]
    ok_p99: float | None
    steady_p99: float | None
    reading: str = ""

    @property
    def queued(self) -> int:
        """Client deadline reached + not started by k6."""
        return self.timeouts + self.dropped

    @property
    def refuses(self) -> bool:
        return self.shed >= 0.1 * self.offered

    @property
    def fast(self) -> bool:
        p50 = _worst(self.shed_p50)
        return p50 is not None and p50 <= FAST_REFUSAL_P50_MS

    @property
    def queues(self) -> bool:
        slower = (
            self.ok_p99 is not None
            and self.steady_p99 is not None
            and self.ok_p99 > 5 * self.steady_p99
        )
        return self.queued > 0.01 * self.offered or slower


def _op_saturation(op: str, op_rows: list[OpRow]) -> OpSaturation:
    burst = [r for r in op_rows if r.op == op and r.phase == "burst"]
    steady = [r for r in op_rows if r.op == op and r.phase == "steady"]
    o = OpSaturation(
        op=op,
        **_sums(burst),
        shed_p50=[r.outcome_latency.get("shed", (None, None))[0] for r in burst],
        shed_p99=[r.outcome_latency.get("shed", (None, None))[1] for r in burst],
        ok_p99=_worst([r.outcome_latency.get("ok", (None, None))[1] for r in burst]),
        steady_p99=_worst([r.p99 for r in steady]),
    )
    refused = (
        f"{o.shed:,} of {o.offered:,} refused (RESOURCE_EXHAUSTED / 429) in "
        f"{_span(o.shed_p50)} (p50), {_span(o.shed_p99)} (p99)"
        if o.shed
        else f"none of {o.offered:,} refused"
    )
    waited = (
        f"OK answers p99 {duration(o.ok_p99)} (steady: {duration(o.steady_p99)}), "
        f"{o.queued:,} left waiting (deadline or no free k6 VU)"
    )
    if o.refuses:
        how = "refuses at once" if o.fast else "refuses, but only after waiting"
    else:
        how = "queues" if o.queues else "kept up"
    o.reading = f"{OP_TITLES[op]}: {how} — {refused}; {waited}"
    return o


@dataclass
class Saturation(BurstCalls):
    """What the server did with more work than it could take (the burst phase)."""

    rss_before: float | None
    rss_peak: float | None
    connections_peak: float | None
    dedicated_peak: float | None
    connections_bound: int
    recovery_errors: int
    recovery_requests: int
    # When the server reported NOT_SERVING (seconds from the load's start).
    health_flips: list[float]
    ops: list[OpSaturation]
    verdict: str = ""
    lines: list[str] = field(default_factory=list)
    overloaded: bool = field(init=False)

    def __post_init__(self) -> None:
        self.overloaded = any(o.refuses or o.queues for o in self.ops)


def saturation(
    op_rows: list[OpRow],
    timeline: Timeline,
    plan: SoakPlan,
    connections_bound: int,
    health_flips: list[float],
) -> Saturation | None:
    phases = {p.name: p for p in plan.phases}
    if (burst := phases.get("burst")) is None:
        return None
    steady = phases["steady"]
    burst_rows = [r for r in op_rows if r.phase == "burst"]
    recovery_requests, recovery_errors = phase_totals(op_rows).get("recovery", (0, 0))
    after = burst.end + 5
    sat = Saturation(
        **_sums(burst_rows),
        rss_before=timeline.growth("server.rss", steady.start, steady.end, 60.0).last,
        rss_peak=timeline.peak("server.rss", burst.start, after),
        connections_peak=timeline.peak("pg.pool_connections", burst.start, after),
        dedicated_peak=timeline.peak("pg.dedicated_connections", burst.start, after),
        connections_bound=connections_bound,
        recovery_errors=recovery_errors,
        recovery_requests=recovery_requests,
        health_flips=health_flips,
        ops=[_op_saturation(op, op_rows) for op in dict.fromkeys(r.op for r in burst_rows)],
    )
    sat.verdict, sat.lines = _judge(sat, plan)
    return sat


def _judge(s: Saturation, plan: SoakPlan) -> tuple[str, list[str]]:
    lines = [
        f"offered {s.offered:,} calls in the burst: {s.ok:,} answered OK, {s.shed:,} refused "
        f"(RESOURCE_EXHAUSTED / 429), {s.timeouts:,} reached the client deadline, "
        f"{s.dropped:,} not started by k6 (no free VU), {s.other:,} other errors",
        *[o.reading for o in s.ops],
    ]
    if s.rss_before is not None and s.rss_peak is not None:
        lines.append(
            f"server RSS: {mb(int(s.rss_before))} at the end of the steady phase, "
            f"peak {mb(int(s.rss_peak))} in the burst "
            f"({(s.rss_peak - s.rss_before) / s.rss_before * 100:+.0f}%)"
        )
    if s.connections_peak is not None:
        line = (
            f"PostgreSQL connections of the server's pools: peak {s.connections_peak:.0f} "
            f"of the {s.connections_bound} they allow"
        )
        if s.dedicated_peak is not None:
            line += f"; dedicated connections (LISTEN, flow run locks): peak {s.dedicated_peak:.0f}"
        lines.append(line)
    by_phase = Counter(_phase_at(plan, t) for t in s.health_flips)
    lines += [
        f"health: the server reported NOT_SERVING {len(s.health_flips)} time(s) "
        f"({', '.join(f'{n} in the {p} phase' for p, n in by_phase.items()) or 'never'}): "
        "its database ping waits for the same pool as the calls",
        f"recovery (steady rate again): {s.recovery_errors:,} errors "
        f"in {s.recovery_requests:,} calls",
    ]
    if not s.overloaded:
        return "not saturated: the burst did not exceed capacity (raise --burst-rate)", lines
    bounded = s.rss_before is None or s.rss_peak is None or s.rss_peak <= 1.5 * s.rss_before
    memory = "memory bounded" if bounded else "memory grew more than 50%"
    recovered = (
        "recovered (no error at the steady rate after it)"
        if s.recovery_errors == 0
        else f"recovered with {s.recovery_errors} error{'s' if s.recovery_errors > 1 else ''} "
        f"in {s.recovery_requests:,} calls after it"
    )
    loaded = [o for o in s.ops if o.refuses or o.queues]
    shedding = [OP_TITLES[o.op] for o in loaded if o.refuses and o.fast]
    queueing = [OP_TITLES[o.op] for o in loaded if not (o.refuses and o.fast)]
    if not queueing:
        verdict = "sheds load: every overloaded operation refused at once"
    elif shedding:
        verdict = f"sheds load partly: {', '.join(shedding)} refused at once; " + (
            f"{', '.join(queueing)} queued (no fast RESOURCE_EXHAUSTED)"
        )
    else:
        verdict = "queues instead of shedding: no operation refused at once"
    return f"{verdict}; {memory}; {recovered}", lines
