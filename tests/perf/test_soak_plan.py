"""The soak's plan and readings (perf/harness), without running anything."""

from __future__ import annotations

import argparse
import itertools
from typing import Any

import pytest

from harness import soak, soak_plan, soak_report
from harness.procmon import Timeline


def _plan() -> soak_plan.SoakPlan:
    return soak_plan.plan(20, 600, burst_rate=200, burst_seconds=60, recovery_seconds=60)


def test_phases_follow_each_other_and_every_operation_runs_in_each() -> None:
    plan = _plan()
    assert [(p.name, p.start, p.end) for p in plan.phases] == [
        ("steady", 0, 600),
        ("burst", 600, 660),
        ("recovery", 660, 720),
    ]
    names = [s.name for s in plan.scenarios]
    assert len(names) == len(set(names))
    by_phase: dict[str, set[tuple[str, str]]] = {}
    for s in plan.scenarios:
        by_phase.setdefault(s.phase, set()).add((s.op, s.protocol))
        phase = next(p for p in plan.phases if p.name == s.phase)
        assert (s.startTime, s.seconds) == (f"{phase.start:g}s", phase.seconds)
        assert 1 <= s.preAllocatedVUs <= s.maxVUs <= 150
    every = {(op, proto) for op in soak_plan.STEADY_MIX for proto in soak_plan.PROTOCOLS}
    assert by_phase["steady"] == by_phase["recovery"] == every
    assert {op for op, _ in by_phase["burst"]} == set(soak_plan.BURST_OPS)
    # The stated rate is what the steady scenarios offer together (per minute in k6).
    steady = [s for s in plan.scenarios if s.phase == "steady"]
    assert sum(s.rate for s in steady) == pytest.approx(20 * 60, abs=len(steady))
    assert all(s.timeUnit == "1m" for s in plan.scenarios)


def test_erasure_scenarios_get_disjoint_slices_of_the_pool() -> None:
    plan = _plan()
    slices = sorted(
        (s.eraseFirst, s.eraseFirst + s.eraseCount - 1) for s in plan.scenarios if s.op == "erasure"
    )
    assert slices[0][0] == 1
    for (_, last), (first, _) in itertools.pairwise(slices):
        assert first == last + 1
    assert plan.erasure_pool == slices[-1][1]
    for s in plan.scenarios:
        if s.op == "erasure":
            # Room for every iteration k6 may start (rate x duration, plus headroom).
            assert s.eraseCount >= s.offered + 1
        else:
            assert s.eraseCount == 0


def test_no_burst_means_no_burst_scenarios() -> None:
    plan = soak_plan.plan(5, 60, burst_rate=0, burst_seconds=0, recovery_seconds=0)
    assert [p.name for p in plan.phases] == ["steady"]
    assert {s.phase for s in plan.scenarios} == {"steady"}
    with pytest.raises(ValueError, match="positive rate"):
        soak_plan.plan(0, 60, burst_rate=0, burst_seconds=0, recovery_seconds=0)


@pytest.mark.parametrize(
    ("text", "seconds"), [("10m", 600), ("90s", 90), ("1m30s", 90), ("600", 600), ("1h", 3600)]
)
def test_durations(text: str, seconds: float) -> None:
    assert soak.seconds(text) == seconds


@pytest.mark.parametrize("text", ["ten", "10 m", "5x", "", "10m\n", "1e3", "-5"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        soak.seconds(text)


@pytest.mark.parametrize(
    "argv",
    [
        ["--duration", "0"],  # the steady phase is what the soak measures
        ["--rate", "0"],
        ["--rate", "nan"],
        ["--rate", "inf"],
        ["--rate", "20\n"],
        ["--burst-rate", "-5"],
        ["--customers", "-3"],
        ["--customers", "2e3"],
        ["--interval", "0"],
        ["--window", "nan"],
        ["--drain-timeout", "-1"],
        ["--max-error-rate", "1.5"],
        ["--max-error-rate", "nan"],
        ["--workers", "0"],  # was read as "the default" (0 is falsy)
        ["--tenant", "Perf"],  # a tenant the server would refuse
        ["--tenant", "perf\n"],
    ],
)
def test_soak_options_refuse_what_they_do_not_understand(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        soak.parse_args(argv)
    assert exit_info.value.code == 2
    assert f"argument {argv[0]}" in capsys.readouterr().err


def test_soak_options_take_their_edge_values() -> None:
    args = soak.parse_args(
        ["--burst", "0", "--max-error-rate", "0", "--rate", "0.5", "--tenant", "perf_2"]
    )
    assert (args.burst, args.max_error_rate, args.rate, args.tenant) == (0, 0, 0.5, "perf_2")


def test_failures_are_read_from_the_k6_log_on_the_load_clock() -> None:
    output = (
        'time="…" level=info msg="soak-failure 1000012500 burst_flow_grpc shed 12" source=console\n'
        "unrelated line\n"
        'time="…" level=info msg="soak-failure 1000070000 recovery_dsar_rest timeout 30001"\n'
    )
    found = soak_report.failures(output, started=1000000.0)
    assert [(f.t, f.scenario, f.outcome, f.ms) for f in found] == [
        (12.5, "burst_flow_grpc", "shed", 12),
        (70.0, "recovery_dsar_rest", "timeout", 30001),
    ]


def _row(op: str, phase: str, proto: str, **reading: Any) -> soak_report.OpRow:
    return soak_report.OpRow(
        scenario=f"{phase}_{op}_{proto}",
        phase=phase,
        op=op,
        protocol=proto,
        planned=100,
        seconds=10,
        per_second=10,
        **reading,
    )


def test_burst_reading_tells_fast_refusals_from_queueing() -> None:
    plan = soak_plan.plan(2, 10, burst_rate=60, burst_seconds=10, recovery_seconds=10)
    rows = []
    for proto in ("grpc", "rest"):
        rows += [
            _row("flow", "steady", proto, requests=10, outcomes={"ok": 10}, p99=50.0),
            _row("provenance", "steady", proto, requests=10, outcomes={"ok": 10}, p99=40.0),
            # Flow starts: most refused within milliseconds.
            _row(
                "flow",
                "burst",
                proto,
                requests=100,
                errors=80,
                outcomes={"ok": 20, "shed": 80},
                outcome_latency={"ok": (30.0, 90.0), "shed": (12.0, 400.0)},
            ),
            # Reads: never refused, answered late, some left without a k6 VU.
            _row(
                "provenance",
                "burst",
                proto,
                requests=90,
                dropped=10,
                outcomes={"ok": 90},
                outcome_latency={"ok": (2000.0, 6000.0)},
            ),
        ]
    sat = soak_report.saturation(rows, Timeline(5.0), plan, 22, [12.0])
    assert sat is not None and sat.overloaded
    readings = {o.op: o for o in sat.ops}
    assert readings["flow"].refuses and readings["flow"].fast
    assert readings["provenance"].queues and not readings["provenance"].refuses
    assert sat.verdict.startswith(
        "sheds load partly: flow run start refused at once; provenance read queued"
    )
    assert any("NOT_SERVING 1 time(s) (1 in the burst phase)" in line for line in sat.lines)
