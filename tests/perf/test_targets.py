"""perf/run's target verdicts: judged only at the scale the targets are set for.

The figures below are those of the smoke run the issue quoted (provenance 0.10x
the echo, heavy erasure 2.59x the DELETE, DSAR export 0.24x the COPY): at smoke
scale they are shown and labelled, not called missed; the same figures from a
full-scale run are missed and make perf/run exit 3."""

from __future__ import annotations

from dataclasses import asdict, fields, replace
from pathlib import Path

import pytest

from harness import run, targets
from harness.report import Row

README = Path(__file__).resolve().parents[2] / "perf" / "README.md"


def _row(key: str, **figures: float) -> Row:
    return Row(key, key, "test", **figures)  # type: ignore[arg-type]


def _rows(
    *,
    provenance_rps: float,
    erase_ms: float,
    export_rps: float,
    rest_p99: float,
    stream_rps: float,
) -> list[Row]:
    return [
        _row("echo.h2load", rps=10_000.0, p50=1.0, p99=2.0),
        _row("provenance.grpc.h2load", rps=provenance_rps, p50=10.0, p99=20.0),
        _row("provenance.rest.h2load", rps=provenance_rps, p50=12.0, p99=25.0),
        _row("provenance.grpc.k6", rps=1000.0, p50=10.0, p99=30.0),
        _row("provenance.rest.k6", rps=1000.0, p50=11.0, p99=rest_p99),
        _row("provenance.rest.sustained.k6", rps=1000.0, p99=rest_p99, error_rate=0.0),
        _row("echo.stream.h2load", rps=20_000.0),
        _row("provenance.stream.kept.h2load", rps=stream_rps),
        _row("single.delete.sql", p50=100.0),
        _row("single.erase.grpc", p50=erase_ms),
        _row("single.copy.sql", rps=100_000.0),
        _row("single.export.grpc", rps=export_rps),
        _row("single.flow.overhead", p50=0.8),
        # ms per node / per step of the in-process chains: the flow runner and DBOS.
        _row("runner.chain.postgres", p50=1.0),
        _row("runner.chain.dbos", p50=7.5),
        _row("runner.chain.postgres-sync", p50=1.7),
        _row("runner.chain.dbos-sync", p50=10.0),
    ]


ISSUE_FIGURES = _rows(
    provenance_rps=1_000.0, erase_ms=259.0, export_rps=24_000.0, rest_p99=40.0, stream_rps=3_000.0
)
GOOD_FIGURES = _rows(
    provenance_rps=3_000.0, erase_ms=120.0, export_rps=60_000.0, rest_p99=40.0, stream_rps=6_000.0
)
SMOKE = run.PROFILES["smoke"]
FULL = run.PROFILES["1k"]


def _by_name(items: list[targets.Target]) -> dict[str, targets.Target]:
    return {t.name.split(" (")[0].split(" at the ")[0]: t for t in items}


def test_the_full_scale_is_the_default_level() -> None:
    # A level's Profile is a Scale with more fields: compare the Scale's own.
    assert {f.name: getattr(FULL, f.name) for f in fields(targets.Scale)} == asdict(
        targets.FULL_SCALE
    )


def test_a_smoke_run_labels_its_ratios_and_judges_nothing() -> None:
    items = targets.targets(ISSUE_FIGURES, SMOKE)
    assert {t.status for t in items} == {"not judged"}
    provenance = _by_name(items)["provenance bundle over gRPC vs echo ceiling"]
    assert provenance.measured == "0.10x (smoke scale)"
    assert "200 read customers (needs ≥ 10,000)" in provenance.verdict
    erasure = _by_name(items)["erasure of a heavy customer vs raw DELETE of the same rows"]
    assert erasure.measured == "2.59x (smoke scale)"
    assert erasure.verdict == (
        "not judged: smoke scale: 2,000 rows per heavy customer (needs ≥ 100,000)"
    )
    assert targets.exit_status(ISSUE_FIGURES, items) == targets.EXIT_OK
    note = targets.scale_note(items)
    assert note is not None and "10 of 10 targets not judged" in note and "smoke scale" in note
    assert "missed" not in targets.table(items)


def test_the_same_figures_at_full_scale_are_missed_and_exit_3() -> None:
    items = targets.targets(ISSUE_FIGURES, FULL)
    by_name = _by_name(items)
    assert by_name["provenance bundle over gRPC vs echo ceiling"].verdict.startswith(
        "missed: 0.10x is 60% short of 0.25x"
    )
    assert by_name["erasure of a heavy customer vs raw DELETE of the same rows"].status == "missed"
    assert by_name["DSAR export rows/s vs COPY"].status == "missed"
    assert by_name["provenance REST p99"].status == "met"
    stream = by_name["bulk stream of kept bundles"]
    assert stream.measured == "3000 bundles/s, 0.15x of the bare grpc.aio stream"
    assert stream.verdict.startswith("missed: 3,000 bundles/s is 40% short of 5,000 bundles/s")
    assert targets.scale_note(items) is None
    assert targets.exit_status(ISSUE_FIGURES, items) == targets.EXIT_TARGET_MISSED == 3


def test_every_target_met_at_full_scale_exits_0() -> None:
    items = targets.targets(GOOD_FIGURES, FULL)
    assert {t.status for t in items} == {"met"}
    assert targets.exit_status(GOOD_FIGURES, items) == targets.EXIT_OK


def test_a_failed_scenario_outranks_a_missed_target() -> None:
    rows = [*ISSUE_FIGURES, replace(_row("dsar.grpc.k6"), status="failed: k6 crashed")]
    items = targets.targets(rows, FULL)
    assert targets.exit_status(rows, items) == targets.EXIT_SCENARIO_FAILED


def test_a_full_level_with_small_heavy_customers_judges_only_what_it_measured() -> None:
    scale = replace(FULL, heavy_rows=2_000)
    by_name = _by_name(targets.targets(ISSUE_FIGURES, scale))
    erasure = by_name["erasure of a heavy customer vs raw DELETE of the same rows"]
    assert erasure.verdict == (
        "not judged: below full scale: 2,000 rows per heavy customer (needs ≥ 100,000)"
    )
    assert by_name["provenance bundle over gRPC vs echo ceiling"].status == "missed"


def test_the_rest_p99_is_judged_at_the_rate_sustained() -> None:
    """At the level's rate the service shed calls; the p99 judged is that of the
    slower run that sustained its rate, and none sustained is a miss."""
    shed = replace(_row("provenance.rest.k6"), rps=400.0, p99=500.0, error_rate=0.55)
    slower = _row("provenance.rest.sustained.k6", rps=320.0, p99=30.0, error_rate=0.002)
    slower.offered = "320/s x 15s"
    rows = [r for r in GOOD_FIGURES if "rest.k6" not in r.key and "sustained" not in r.key]
    p99 = _by_name(targets.targets([*rows, shed, slower], FULL))["provenance REST p99"]
    assert (p99.status, p99.measured) == ("met", "30 ms") and "320/s" in p99.name
    unsustained = replace(slower, p99=45.0, error_rate=0.03, note="not sustained")
    p99 = _by_name(targets.targets([*rows, shed, unsustained], FULL))["provenance REST p99"]
    assert p99.status == "missed" and "no rate sustained" in p99.verdict


@pytest.mark.parametrize("level", ["5k", "10k"])
def test_the_1k_p99_target_is_not_judged_at_another_rate(level: str) -> None:
    items = targets.targets(ISSUE_FIGURES, replace(FULL, level=level))
    p99 = _by_name(items)["provenance REST p99"]
    assert p99.status == "not judged" and "needs 1k" in p99.verdict


def test_an_absent_row_is_not_measured_and_not_judged() -> None:
    items = targets.targets([], SMOKE)
    assert {t.status for t in items} == {"not measured"}
    assert targets.exit_status([], items) == targets.EXIT_OK


def test_the_exit_status_is_documented() -> None:
    text = README.read_text()
    assert f"exits {targets.EXIT_TARGET_MISSED}" in text
    assert "not judged" in text and "smoke scale" in text


def test_the_flow_runner_is_judged_against_dbos_in_the_same_commit_mode() -> None:
    rows = [r for r in GOOD_FIGURES if r.key != "runner.chain.dbos-sync"]
    rows.append(_row("runner.chain.dbos-sync", p50=2.0))  # flow 1.7 ms: 0.85x of DBOS
    items = [t for t in targets.targets(rows, FULL) if "DBOS" in t.name]
    assert [(t.name.rsplit(" ", 1)[-1], t.measured, t.status) for t in items] == [
        ("off)", "0.13x", "met"),
        ("on)", "0.85x", "missed"),
    ]
    assert targets.exit_status(rows, targets.targets(rows, FULL)) == targets.EXIT_TARGET_MISSED
