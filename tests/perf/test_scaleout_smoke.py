"""perf/run --only scaleout --smoke: the same k6 load through nginx onto 1, then 3,
then 1 replica again (drift) of the multi-host lab, every row measured and the
3:1 ratio computed.

No timing assertions (the machine is shared): the figures are recorded in
docs/SCALING.md and perf/baselines/. Needs root and nginx, like tests/multihost.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.perf.support import run_perf
from tests.support.netns import unavailable_reason


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_scaleout_scenario_measures_one_and_three_replicas(results_dir: Path) -> None:
    if (reason := unavailable_reason()) is not None:
        pytest.fail(f"the scale-out scenario cannot run: {reason}")
    proc, results = run_perf("run", "--smoke", "--only", "scaleout", out=results_dir)
    rows = {row["key"]: row for row in results["rows"]}
    phases = {"1": 1, "3": 3, "1-again": 1}
    assert set(rows) == {f"scaleout.{load}.{p}.k6" for load in ("light", "heavy") for p in phases}
    for key, row in rows.items():
        assert row["status"] == "ok", (key, row["status"])
        assert row["rps"] > 0 and row["p50"] is not None and row["p99"] is not None, key
        # Shedding, deadlines and k6's dropped iterations are how an overloaded
        # (shared) machine shows; a wrong answer or a broken connection is a bug.
        outcomes = row["extra"]["failed_outcomes"]
        assert not {"error", "network"} & set(outcomes), (key, outcomes)
        assert row["errors"] == sum(outcomes.values()) + row["extra"]["dropped"], key
        assert row["server_cpu"] is not None and row["server_rss"] > 0, key
        assert row["extra"]["requests"] > 0, key
        # Through nginx to as many replicas as the phase had (gRPC and REST each).
        assert len(row["extra"]["upstreams"]) == 2 * phases[key.split(".")[2]], key
        if ".1.k6" not in key:
            assert row["baseline"] == key.replace(key.split(".")[2], "1")
            assert row["ratio_rps"] is not None, key
    assert "overhead, not scaling" in proc.stdout
