"""A real Prometheus (Debian's) scrapes a running server (KAIREON_WORKERS=2, so
the supervisor's multi-process /metrics) after a workload; every metric family
is queried through its HTTP API, every label checked for personal or unbounded
values, and every dashboard and alert expression parsed by Prometheus itself."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from kaireon_server.demo.seed import SeedSize, customer_id, decision_id, seed_tenant
from kaireon_server.platform.config import Settings
from kaireon_server.platform.db import connect_database
from tests.observability.support import DEPLOY, free_port, tool, workload
from tests.support.server import ServerProcess, base_env

pytestmark = pytest.mark.slow

SEED = SeedSize(customers=4, interactions_per_customer=3, decisions_per_customer=1)

# Every series name the service exports (histograms by their _bucket series).
FAMILIES = (
    "grpc_server_started_total",
    "grpc_server_handled_total",
    "grpc_server_handling_seconds_bucket",
    "kaireon_grpc_server_in_flight",
    "kaireon_admission_refused_total",
    "kaireon_http_requests_total",
    "kaireon_http_request_duration_seconds_bucket",
    "kaireon_db_pool_connections",
    "kaireon_db_pool_max_connections",
    "kaireon_db_pool_in_use",
    "kaireon_db_pool_waiting",
    "kaireon_db_pool_acquire_seconds_bucket",
    "kaireon_db_statement_seconds_bucket",
    "kaireon_db_connection_errors_total",
    "kaireon_dsar_requests",
    "kaireon_dsar_oldest_pending_age_seconds",
    "kaireon_dsar_overdue_requests",
    "kaireon_dsar_export_seconds_bucket",
    "kaireon_dsar_export_bytes_bucket",
    "kaireon_dsar_export_attempts_total",
    "kaireon_erasures_total",
    "kaireon_erasure_rows_deleted_total",
    "kaireon_erasure_legal_hold_refusals_total",
    "kaireon_provenance_bundles_total",
    "kaireon_signing_seconds_bucket",
    "kaireon_signing_errors_total",
    "kaireon_flow_runs",
    "kaireon_flow_runs_stuck",
    "kaireon_flow_node_seconds_bucket",
    "kaireon_flow_checkpoint_seconds_bucket",
    "kaireon_audit_appends_total",
    "kaireon_audit_verifications_total",
    "kaireon_audit_checkpoint_lag_seconds",
    "kaireon_build_info",
)

# Label values may only look like these: codes, states, names from the code.
SAFE_VALUE = re.compile(r"[A-Za-z0-9_.:/{}+,\- ]{0,200}|[0-9a-f,]{0,1000}")
MAX_SERIES_PER_FAMILY = 100


@pytest.fixture
def server(database_url: str, signing_key_path: Path) -> Iterator[ServerProcess]:
    env = base_env(
        database_url,
        COSIGN_KEY=str(signing_key_path),
        KAIREON_WORKERS="2",
        KAIREON_GRPC_PORT=str(free_port()),
        KAIREON_HTTP_PORT=str(free_port()),
        KAIREON_METRICS_PORT=str(free_port()),
        KAIREON_METRICS_HOST="127.0.0.1",
        KAIREON_METRICS_SAMPLE_SECONDS="0.5",
        KAIREON_DB_POOL_MIN="1",
        KAIREON_DB_POOL_MAX="4",
        GIT_SHA="0123456789abcdef0123456789abcdef01234567",
    )
    process = ServerProcess(env).start()
    process.metrics_port = int(env["KAIREON_METRICS_PORT"])  # type: ignore[attr-defined]
    try:
        yield process
    finally:
        assert process.stop() == 0


@pytest.fixture
def prometheus(tmp_path: Path, server: ServerProcess) -> Iterator[str]:
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(DEPLOY / "alerts.yml")],
                "scrape_configs": [
                    {
                        "job_name": "kaireon",
                        "static_configs": [
                            {"targets": [f"127.0.0.1:{server.metrics_port}"]}  # type: ignore[attr-defined]
                        ],
                    }
                ],
            }
        )
    )
    proc = subprocess.Popen(
        [
            tool("prometheus"),
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def _query(http: aiohttp.ClientSession, base: str, expr: str) -> dict[str, Any]:
    async with http.get(f"{base}/api/v1/query", params={"query": expr}) as r:
        body: dict[str, Any] = await r.json()
        return body


async def _wait_ready(http: aiohttp.ClientSession, base: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            async with http.get(f"{base}/-/ready") as r:
                if r.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.3)
    raise AssertionError("prometheus did not become ready")


def _dashboard_expressions() -> list[str]:
    dashboard = json.loads((DEPLOY / "dashboard.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    assert len(exprs) >= 15
    return exprs


def _alert_expressions() -> list[str]:
    rules = yaml.safe_load((DEPLOY / "alerts.yml").read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


async def test_prometheus_scrapes_every_family_without_personal_labels(
    server: ServerProcess, prometheus: str, database_url: str, tenant: str
):
    # Seeded over a pool of its own: no in-process server (and its DSAR workers).
    db = await connect_database(Settings.from_env(base_env(database_url)), migrate=False)
    try:
        await seed_tenant(db, tenant, SEED)
    finally:
        await db.close()
    seen = await workload(f"http://127.0.0.1:{server.http_port}", tenant)
    await asyncio.sleep(1.5)  # one more sample of the database gauges

    async with aiohttp.ClientSession() as http:
        # Our own scrape: Prometheus text, and OpenMetrics when asked for.
        url = f"http://127.0.0.1:{server.metrics_port}/metrics"  # type: ignore[attr-defined]
        async with http.get(url) as r:
            assert r.status == 200
            assert r.headers["Content-Type"].startswith("text/plain")
            text = await r.text()
        async with http.get(url, headers={"Accept": "application/openmetrics-text"}) as r:
            assert r.headers["Content-Type"].startswith("application/openmetrics-text")
            assert (await r.text()).rstrip().endswith("# EOF")

        forbidden = [tenant, seen["request_id"], decision_id(3, 1)]
        forbidden += [customer_id(n) for n in range(1, SEED.customers + 1)]
        series: dict[str, set[tuple[tuple[str, str], ...]]] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                key = tuple(sorted((k, v) for k, v in sample.labels.items() if k != "le"))
                series.setdefault(family.name, set()).add(key)
                for name, value in sample.labels.items():
                    assert SAFE_VALUE.fullmatch(value), (sample.name, name, value)
                    for bad in forbidden:
                        assert bad not in value, (sample.name, name, value)
        # Bounded cardinality: label sets per family (histogram buckets aside).
        sizes = {name: len(keys) for name, keys in series.items()}
        assert max(sizes.values()) <= MAX_SERIES_PER_FAMILY, sizes
        assert 'route="/api/v1/decisions/{decision_id}/provenance"' in text
        assert 'route="unmatched"' in text
        assert 'kaireon_build_info{commit="0123456789abcdef0123456789abcdef01234567"' in text

        # The real Prometheus: each family has at least one series.
        await _wait_ready(http, prometheus)
        deadline = time.monotonic() + 60
        missing: list[str] = list(FAMILIES)
        while missing and time.monotonic() < deadline:
            still = []
            for name in missing:
                body = await _query(http, prometheus, f'count({{__name__="{name}"}})')
                assert body["status"] == "success", body
                if not body["data"]["result"]:
                    still.append(name)
            missing = still
            if missing:
                await asyncio.sleep(1)
        assert not missing, f"families Prometheus did not scrape: {missing}"

        checks = {
            'sum(grpc_server_handled_total{grpc_service="kaireon.erasure.v1.ErasureService",'
            'grpc_method="EraseCustomer",grpc_code="OK"})': 3,
            'sum(grpc_server_handled_total{grpc_method="EraseCustomer",grpc_code="FailedPrecondition"})': 1,
            "sum(kaireon_erasure_legal_hold_refusals_total)": 1,
            'sum(kaireon_erasures_total{outcome="erased"})': 2,
            "sum(kaireon_provenance_bundles_total)": 1,
            'sum(kaireon_http_requests_total{route="unmatched",code="404"})': 1,
            'sum(kaireon_audit_verifications_total{result="valid"})': 1,
        }
        for expr, expected in checks.items():
            body = await _query(http, prometheus, expr)
            assert body["status"] == "success", body
            assert body["data"]["result"], expr
            assert float(body["data"]["result"][0]["value"][1]) >= expected, (expr, body)

        # Every dashboard and alert expression parses and evaluates.
        for expr in [*_dashboard_expressions(), *_alert_expressions()]:
            body = await _query(http, prometheus, expr.replace("$__rate_interval", "1m"))
            assert body["status"] == "success", (expr, body)

        # The alert rules loaded into this Prometheus, one per documented alert.
        async with http.get(f"{prometheus}/api/v1/rules") as r:
            groups = (await r.json())["data"]["groups"]
        loaded = {rule["name"] for group in groups for rule in group["rules"]}
        assert len(loaded) >= 9
