"""The shipped operations files, checked by Prometheus's own tool."""

from __future__ import annotations

import json
import subprocess

import yaml
from prometheus_client import REGISTRY, generate_latest

from kaireon_server.app import App
from tests.observability.support import DEPLOY, tool


def _promtool(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("promtool"), *args],
        cwd=DEPLOY,
        input=stdin.decode() if stdin is not None else None,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_alert_rules_pass_promtool_check_and_unit_tests():
    checked = _promtool("check", "rules", "alerts.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 11 rules found" in checked.stdout
    tested = _promtool("test", "rules", "alerts_test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_alert_has_a_unit_test_and_a_runbook():
    rules = yaml.safe_load((DEPLOY / "alerts.yml").read_text())
    alerts = {r["alert"]: r for g in rules["groups"] for r in g["rules"]}
    tests = yaml.safe_load((DEPLOY / "alerts_test.yml").read_text())
    firing = {
        case["alertname"]
        for test in tests["tests"]
        for case in test["alert_rule_test"]
        if case["exp_alerts"]
    }
    assert firing == set(alerts)
    operations = (DEPLOY.parents[1] / "docs" / "OPERATIONS.md").read_text()
    for name, rule in alerts.items():
        assert rule["annotations"]["runbook"].startswith(f"docs/OPERATIONS.md#{name.lower()}")
        assert f"### {name}" in operations


def test_exposition_passes_promtool_check_metrics(app: App):
    # The in-process server's registry after the session's calls so far.
    result = _promtool("check", "metrics", stdin=generate_latest(REGISTRY))
    # promtool reports lint problems on stdout/stderr and exits 3 for them.
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_is_grafana_json_with_a_query_per_panel():
    dashboard = json.loads((DEPLOY / "dashboard.json").read_text())
    assert dashboard["uid"] == "kaireon-overview"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip()
