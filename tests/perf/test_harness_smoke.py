"""perf/run --smoke against a real server: every row is there and was measured.

No timing assertions (the machine is shared and noisy): the test checks the
table's structure and that each measurement happened, i.e. a scenario whose
service is served reports a non-zero rate and an error rate, and one whose
service is not served says so instead of failing.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.perf.support import run_perf

EXPECTED_ROWS = {
    "echo.h2load",
    "lookup.h2load",
    "health.h2load",
    "echo.k6",
    "provenance.grpc.h2load",
    "provenance.rest.h2load",
    "provenance.grpc.k6",
    "provenance.rest.k6",
    "provenance.rest.sustained.k6",
    "provenance.stream.first",
    "provenance.stream.kept",
    # The kept stream from h2load, beside the bare grpc.aio stream it is divided by.
    "echo.stream.h2load",
    "provenance.stream.kept.h2load",
    "erasure.grpc.k6",
    "erasure.rest.k6",
    "dsar.grpc.k6",
    "dsar.rest.k6",
    "flow.grpc.k6",
    "flow.rest.k6",
    "single.copy.sql",
    "single.export.grpc",
    "single.download.grpc",
    "single.delete.sql",
    "single.erase.grpc",
    "single.erase.absent",
    "single.flow.1",
    "single.flow.5",
    "single.flow.overhead",
    # The in-process flow runner per checkpoint store (was perf/flow_bench.py).
    *(
        f"runner.{shape}.{store}"
        for shape in ("chain", "fan-out")
        for store in (
            "floor",
            "memory",
            "postgres",
            "postgres+recorder",
            "postgres-sync",
            "postgres-retry",
        )
    ),
    # The peer in the same run (issue #22): DBOS Transact's chain of no-op steps.
    "runner.chain.dbos",
    "runner.chain.dbos-sync",
}
LOAD_ROWS = {key for key in EXPECTED_ROWS if key.endswith((".k6", ".h2load"))}
SERVICE_OF = {
    "provenance": "provenance",
    "erasure": "erasure",
    "dsar": "dsar",
    "flow": "flow",
    "single.export": "dsar",
    "single.download": "dsar",
    "single.erase": "erasure",
    "single.flow": "flow",
}


def _service(key: str) -> str | None:
    for prefix, service in SERVICE_OF.items():
        if key.startswith(prefix):
            return service
    return None


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_smoke_run_prints_every_row_with_measurements(results_dir: Path) -> None:
    proc, results = run_perf("run", "--smoke", out=results_dir)
    rows = {row["key"]: row for row in results["rows"]}
    assert set(rows) == EXPECTED_ROWS

    # The printed table has a line per row, the ratio columns and the targets.
    for heading in ("achieved", "p50 ms", "p99 ms", "errors", "server CPU", "server peak RSS"):
        assert heading in proc.stdout
    assert "baseline (same run)" in proc.stdout and "p50 x" in proc.stdout
    assert proc.stdout.count("\n| ") >= len(EXPECTED_ROWS)
    assert "| target | measured | wanted | verdict |" in proc.stdout
    # A smoke run labels its ratios and judges no target (tests/perf/test_targets.py).
    assert {t["status"] for t in results["targets"]} <= {"not judged", "not measured"}
    assert "(smoke scale)" in proc.stdout and "targets not judged" in proc.stdout
    assert "k6 takes about as much CPU as the" in proc.stdout

    served = results["served"]
    for key, row in rows.items():
        status = row["status"]
        assert not status.startswith("failed"), (key, status)
        service = _service(key)
        if service is not None and not served[service]:
            assert status == "not served", (key, status)
            continue
        if key.endswith(".h2load") and status == "skipped: no h2load":
            continue  # a machine where tools/dev/setup.sh could not install it
        assert status == "ok", (key, status)
        if key in LOAD_ROWS:
            assert row["rps"] > 0, key
            assert row["error_rate"] is not None, key
            assert row["p50"] is not None and row["p99"] is not None, key
            assert row["server_cpu"] is not None and row["server_rss"] > 0, key
            assert row["gen_cpu"] is not None, key
        elif not key.startswith("provenance.stream."):  # a throughput, no latency
            assert row["p50"] is not None, key

    # Ratios are computed against rows of the same run.
    prov = rows["provenance.rest.k6"]
    if prov["status"] == "ok":
        assert prov["baseline"] == "provenance.grpc.k6"
        assert prov["ratio_p50"] is not None
    if rows["single.erase.grpc"]["status"] == "ok":
        assert rows["single.erase.grpc"]["ratio_p50"] is not None
    # The bulk stream: every decision asked for came back as a bundle.
    for key in ("provenance.stream.first", "provenance.stream.kept"):
        if rows[key]["status"] == "ok":
            assert rows[key]["rps"] > 0 and rows[key]["errors"] == 0, key
            assert rows[key]["extra"]["bundles"] > 0, key
    kept = rows["provenance.stream.kept.h2load"]
    if kept["status"] == "ok":
        # Every bundle of every stream h2load saw finish was audited.
        assert kept["errors"] == 0 and kept["unit"] == "bundles/s"
        assert kept["ratio_rps"] is not None  # x the bare stream's messages/s
    # What the folded-in benchmarks printed is still there.
    for key in ("single.export.grpc", "single.download.grpc"):
        if rows[key]["status"] == "ok":
            assert rows[key]["rps"] > 0 and rows[key]["extra"]["rss_growth"] >= 0, key
            assert rows[key]["ratio_rps"] is not None, key  # vs COPY
    assert rows["single.copy.sql"]["extra"]["client_rss_growth"] >= 0
    runner = {k: r for k, r in rows.items() if k.startswith("runner.")}
    for key, row in runner.items():
        assert row["extra"]["cpu_ms_per_node"] > 0, key
        assert key.endswith(".floor") or row["ratio_p50"] is not None, key  # x floor
        assert row["scenario"] + ": " + f"{row['p50']:.3f} ms/node" in proc.stdout, key
    assert "goal <= 2 ms/node" in proc.stdout
    for mode in ("off", "on"):
        assert (
            f"flow runner per node vs DBOS Transact per step (chain, synchronous_commit {mode})"
            in proc.stdout
        )


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_opt_in_groups_of_the_former_benchmarks_print_their_rows(results_dir: Path) -> None:
    """`--only tlog,metrics,scale` (were perf/audit_tlog_bench.py,
    perf/metrics_cost_bench.py and perf/scale_bench.py), contention included."""
    proc, results = run_perf(
        "run",
        "--smoke",
        "--only",
        "tlog,metrics,scale",
        "--scale-contention",
        out=results_dir,
    )
    every = {row["key"]: row for row in results["rows"]}
    scale = {key: row for key, row in every.items() if key.startswith("scale.")}
    rows = {key: row for key, row in every.items() if key not in scale}
    configs = ("off", "metrics", "both")
    assert set(rows) == {"tlog.appends"} | {
        f"metrics.{call}.{config}" for call in ("provenance", "erasure") for config in configs
    }
    _check_scale_rows(scale)
    assert all(row["status"] == "ok" for row in rows.values()), rows
    tlog = rows["tlog.appends"]
    # Every appended row was checkpointed; the lag percentiles are ordered.
    assert tlog["rps"] > 0 and tlog["errors"] == 0 and tlog["extra"]["rows"] > 0
    assert 0 <= tlog["p50"] <= tlog["p95"] <= tlog["p99"]
    assert "% within 1 s" in proc.stdout
    for call in ("provenance", "erasure"):
        for config in configs:
            row = rows[f"metrics.{call}.{config}"]
            assert row["rps"] > 0 and row["extra"]["cpu_ms_per_call"] > 0, (call, config)
        assert rows[f"metrics.{call}.metrics"]["baseline"] == f"metrics.{call}.off"
        assert rows[f"metrics.{call}.both"]["ratio_rps"] is not None
    assert "goal metrics cost < 5% not judged at smoke scale" in proc.stdout


SCALE_CALLS = {
    "dsar-create",
    "dsar-get",
    "dsar-list-status-completed",
    "dsar-list-status-failed",
    "dsar-list-deep-page",
    "dsar-list-subject",
    "listruns",
    "listruns-state-failed",
    "listruns-state-running",
    "listruns-deep-page",
    "getrun",
    "listauditevents",
    "listauditevents-action",
    "listauditevents-deep-page",
    "getcheckpoint",
    "getinclusionproof",
    "getconsistencyproof",
    "listentries--50",
    "verifychain---100-rows",
    "verifylog---100-rows",
    "erasure-dry-run",
    "provenance",
}


def _check_scale_rows(rows: dict[str, dict]) -> None:
    """Every call at both sizes (the large one's p50 ratio is the growth), the full
    runs as throughputs, the contention phases against the idle one."""
    sizes = ("1000", "10000")
    calls = {f"scale.{call}.{size}" for call in SCALE_CALLS for size in sizes}
    full = {
        f"scale.full.{what}.{size}"
        for what in ("integrate", "VerifyChain", "VerifyLog")
        for size in sizes
    }
    contention = {
        f"scale.contention.{call}.{phase}"
        for call in ("listauditevents", "provenance")
        for phase in ("idle", "verifying", "idle-after")
    }
    assert set(rows) == calls | full | contention
    assert all(row["status"] == "ok" for row in rows.values()), rows
    for call in SCALE_CALLS:
        small, large = rows[f"scale.{call}.1000"], rows[f"scale.{call}.10000"]
        assert small["p50"] > 0 and large["p50"] > 0, call
        assert large["baseline"] == f"scale.{call}.1000" and large["ratio_p50"] > 0, call
    assert all(rows[key]["rps"] > 0 for key in full)
    for key in contention:
        assert rows[key]["p50"] > 0 and rows[key]["p99"] >= rows[key]["p50"], key
    assert "rows verified in" in rows["scale.contention.provenance.verifying"]["note"]
    assert "access rows written by" in rows["scale.dsar-list-status-completed.1000"]["note"]
