"""perf/soak --smoke against a real server: ~30 s of load at a tiny rate.

Like the perf/run smoke test, no timing assertions (the machine is shared):
every operation of the steady phase was offered and answered without error,
the burst and recovery phases are reported, the resources were sampled over
time, and what the load left behind was verified (audit chain valid, every
DSAR request and flow run terminal, every erasure complete).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.perf.support import run_perf

BURST_OPERATIONS = {
    f"{op}_{p}" for op in ("provenance", "erasure", "flow") for p in ("grpc", "rest")
}
OPERATIONS = BURST_OPERATIONS | {"dsar_grpc", "dsar_rest"}


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_soak_smoke_has_every_operation_without_errors_and_a_valid_chain(
    results_dir: Path,
) -> None:
    proc, results = run_perf("soak", "--smoke", out=results_dir)

    ops = {(r["phase"], f"{r['op']}_{r['protocol']}"): r for r in results["operations"]}
    assert {name for phase, name in ops if phase == "steady"} == OPERATIONS
    assert {name for phase, name in ops if phase == "recovery"} == OPERATIONS
    assert {name for phase, name in ops if phase == "burst"} == BURST_OPERATIONS
    for name in OPERATIONS:
        row = ops[("steady", name)]
        assert row["requests"] > 0, name
        assert row["error_count"] == 0, (name, row["outcomes"], row["dropped"])
        assert row["outcomes"] == {"ok": row["requests"]}, name
        assert row["p50"] is not None and row["p99"] is not None, name
    assert results["steady_error_rate"] == 0

    checks = {c["name"]: c for c in results["checks"]}
    assert set(checks) == {
        "audit chain",
        "DSAR requests terminal",
        "flow runs terminal",
        "erasures left nothing",
    }
    assert all(c["ok"] for c in checks.values()), checks
    assert checks["audit chain"]["figures"]["valid"] is True
    assert checks["audit chain"]["figures"]["rows_checked"] > 0
    assert checks["DSAR requests terminal"]["figures"]["created"] > 0
    assert checks["erasures left nothing"]["figures"]["erased"] > 0
    assert checks["erasures left nothing"]["figures"]["rows_left"] == 0

    # Resources were sampled over time, per process tree, with PostgreSQL's connections.
    series = {r["series"]["key"]: r for r in results["resources"]}
    for key in ("server.rss", "server.fds", "pg.rss", "pg.fds", "pg.server_connections"):
        assert series[key]["steady"]["first"] is not None, key
        assert series[key]["steady"]["last"] is not None, key
    assert series["server.rss"]["steady"]["first"] > 0
    assert len(results["timeline"]) >= 10
    saturation = results["saturation"]
    assert saturation is not None and saturation["verdict"]
    assert saturation["offered"] > 0

    report = (results_dir / "report.md").read_text()
    assert report.strip() == proc.stdout.strip()
    for heading in ("| phase | operation | offered | achieved | p50 ms", "### Resources"):
        assert heading in report
    assert "### Saturation (burst)" in report and "verdict:" in report
    assert "audit chain: ok — VerifyChain valid=True" in report
    assert report.count("\n| steady |") == len(OPERATIONS)
