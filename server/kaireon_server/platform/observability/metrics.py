"""Prometheus metrics: every family the service exports, and the /metrics endpoint.

RPC metrics follow go-grpc-prometheus (`grpc_server_started_total`,
`grpc_server_handled_total`, `grpc_server_handling_seconds` with `grpc_type`,
`grpc_service`, `grpc_method`, `grpc_code`), so its dashboards and alerts work
unchanged. Everything else is `kaireon_*`.

Labels are closed sets only: method and route templates from the descriptors,
status codes, states, categories from the data map, reason codes. Never a
customer, subject, decision, request or tenant id (tests/observability scrapes
after a workload and checks every label value).

With KAIREON_WORKERS > 1 the supervisor sets PROMETHEUS_MULTIPROC_DIR for its
children (prometheus_client's multi-process mode) and serves the sum itself;
a child only records. Recording is cheap and always on: with
KAIREON_METRICS_PORT=0 nothing is served.
"""

from __future__ import annotations

import importlib.metadata
import re
import threading
from collections.abc import Mapping
from typing import Any

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    start_http_server,
)
from prometheus_client import multiprocess as _multiprocess

from kaireon_server.platform.env import EnvReader, process_environment

__all__ = ["MetricsSettings", "serve_metrics"]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# Short calls (ms) up to slow exports and erasures (tens of seconds).
_LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_LONG = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)
_BYTES = tuple(float(4**k) * 1024 for k in range(1, 12))  # 4 KiB .. 4 GiB

_RPC = ("grpc_type", "grpc_service", "grpc_method")

# --- RPC (go-grpc-prometheus names and labels) ---------------------------------
RPC_STARTED = Counter("grpc_server_started_total", "RPCs started on the server.", _RPC)
RPC_HANDLED = Counter(
    "grpc_server_handled_total", "RPCs completed on the server, by code.", (*_RPC, "grpc_code")
)
RPC_HANDLING = Histogram(
    "grpc_server_handling_seconds", "Time to handle an RPC (server side).", _RPC, buckets=_LATENCY
)
RPC_IN_FLIGHT = Gauge(
    "kaireon_grpc_server_in_flight",
    "RPCs being handled now.",
    _RPC,
    multiprocess_mode="livesum",
)
ADMISSION_REFUSED = Counter(
    "kaireon_admission_refused_total",
    "Calls refused by admission (platform/admission.py, pool waiters), by reason.",
    ("reason",),
)

# --- REST adapter ------------------------------------------------------------------
HTTP_REQUESTS = Counter(
    "kaireon_http_requests_total",
    "REST adapter requests by route template (never the raw path) and status.",
    ("method", "route", "code"),
)
HTTP_DURATION = Histogram(
    "kaireon_http_request_duration_seconds",
    "REST adapter request latency by route template.",
    ("method", "route"),
    buckets=_LATENCY,
)

# --- Database --------------------------------------------------------------------
DB_POOL_SIZE = Gauge(
    "kaireon_db_pool_connections", "Open pool connections.", multiprocess_mode="livesum"
)
DB_POOL_MAX = Gauge(
    "kaireon_db_pool_max_connections", "The pool's maximum size.", multiprocess_mode="livesum"
)
DB_POOL_IN_USE = Gauge(
    "kaireon_db_pool_in_use", "Pool connections handed out.", multiprocess_mode="livesum"
)
DB_POOL_WAITING = Gauge(
    "kaireon_db_pool_waiting",
    "Acquires waiting for (or opening) a connection.",
    multiprocess_mode="livesum",
)
DB_ACQUIRE = Histogram(
    "kaireon_db_pool_acquire_seconds", "Time to acquire a pool connection.", buckets=_LATENCY
)
DB_STATEMENT = Histogram(
    "kaireon_db_statement_seconds",
    "Statement time by the server function that ran it (module.function).",
    ("function",),
    buckets=_LATENCY,
)
DB_CONNECTION_ERRORS = Counter(
    "kaireon_db_connection_errors_total",
    "Pool acquires that failed, and connections discarded, by kind.",
    ("kind",),
)

# --- DSAR ----------------------------------------------------------------------------
DSAR_QUEUE = Gauge(
    "kaireon_dsar_requests",
    "DSAR requests by state (all tenants; sampled).",
    ("state",),
    multiprocess_mode="max",
)
DSAR_OLDEST_PENDING = Gauge(
    "kaireon_dsar_oldest_pending_age_seconds",
    "Age of the oldest request not yet completed or failed (0 = none).",
    multiprocess_mode="max",
)
DSAR_OVERDUE = Gauge(
    "kaireon_dsar_overdue_requests",
    "Requests open longer than KAIREON_DSAR_DUE_DAYS (the statutory deadline).",
    multiprocess_mode="max",
)
REQUESTS_OVERDUE = Gauge(
    "kaireon_requests_overdue",
    "Lifecycle data-subject requests whose clock runs past their due date (sampled).",
    multiprocess_mode="max",
)
REQUESTS_OVERDUE_SECONDS = Gauge(
    "kaireon_requests_overdue_seconds",
    "How long ago the earliest due date of an overdue lifecycle request ended (sampled).",
    multiprocess_mode="max",
)
DSAR_EXPORT_DURATION = Histogram(
    "kaireon_dsar_export_seconds", "Export job duration by outcome.", ("outcome",), buckets=_LONG
)
DSAR_EXPORT_BYTES = Histogram(
    "kaireon_dsar_export_bytes", "Size of completed export documents.", buckets=_BYTES
)
DSAR_ATTEMPTS = Counter(
    "kaireon_dsar_export_attempts_total", "Export attempts by outcome.", ("outcome",)
)

# --- Erasure ---------------------------------------------------------------------------
ERASURES = Counter(
    "kaireon_erasures_total", "Erasure calls by outcome (erased, dry_run, refused).", ("outcome",)
)
ERASED_ROWS = Counter(
    "kaireon_erasure_rows_deleted_total", "Rows deleted by data-map category.", ("category",)
)
LEGAL_HOLD_REFUSALS = Counter(
    "kaireon_erasure_legal_hold_refusals_total", "Erasures refused by a legal hold."
)

# --- Provenance and signing -------------------------------------------------------------
PROVENANCE_BUNDLES = Counter(
    "kaireon_provenance_bundles_total", "Provenance bundles emitted (signed)."
)
SIGNING = Histogram(
    "kaireon_signing_seconds", "Time to sign one document (ECDSA).", buckets=_LATENCY
)
SIGNING_ERRORS = Counter("kaireon_signing_errors_total", "Signing attempts that failed.")

# --- Flow ----------------------------------------------------------------------------------
FLOW_RUNS = Gauge(
    "kaireon_flow_runs",
    "Flow runs by state (all tenants; sampled).",
    ("state",),
    multiprocess_mode="max",
)
FLOW_RUNS_STUCK = Gauge(
    "kaireon_flow_runs_stuck",
    "Running runs with no event for KAIREON_FLOW_STUCK_SECONDS (sampled).",
    multiprocess_mode="max",
)
FLOW_NODE = Histogram(
    "kaireon_flow_node_seconds",
    "Flow node duration by node type and outcome.",
    ("node_type", "outcome"),
    buckets=_LONG,
)
FLOW_CHECKPOINT = Histogram(
    "kaireon_flow_checkpoint_seconds", "Time to commit one node checkpoint.", buckets=_LATENCY
)

# --- Audit -----------------------------------------------------------------------------------
AUDIT_APPENDS = Counter(
    "kaireon_audit_appends_total", "Audit rows appended, by action.", ("action",)
)
AUDIT_VERIFICATIONS = Counter(
    "kaireon_audit_verifications_total", "Audit chain verifications by result.", ("result",)
)
# Sampled from the database (sampler.py, migration 0171), not set at publish time:
# it must keep growing while no integrator publishes at all.
AUDIT_CHECKPOINT_LAG = Gauge(
    "kaireon_audit_checkpoint_lag_seconds",
    "Age of the oldest audit row not yet covered by a checkpoint (all tenants; sampled).",
    multiprocess_mode="max",
)

# --- Build ------------------------------------------------------------------------------------
BUILD_INFO = Gauge(
    "kaireon_build_info",
    "Always 1; the labels say which build runs and which signing key ids are loaded.",
    ("version", "commit", "signing_key_ids"),
    multiprocess_mode="max",
)

# Closed sets that labels are checked against (tests/observability).
DSAR_STATES = ("pending", "processing", "completed", "failed")
FLOW_STATES = ("pending", "running", "succeeded", "failed", "cancelled")


# Every reason, outcome and kind starts at 0, so rates and alerts have a series
# before the first event (and a scrape lists every family).
ADMISSION_REASONS = (
    "RPCS_EXHAUSTED",
    "TENANT_RPCS_EXHAUSTED",
    "PUBLIC_RPCS_EXHAUSTED",
    "PEER_RPCS_EXHAUSTED",
    "DB_POOL_BUSY",
    "DB_POOL_EXHAUSTED",
)
for _reason in ADMISSION_REASONS:
    ADMISSION_REFUSED.labels(_reason)
for _kind in ("connect", "connect_timeout", "discarded"):
    DB_CONNECTION_ERRORS.labels(_kind)
for _outcome in ("erased", "dry_run", "refused"):
    ERASURES.labels(_outcome)
for _outcome in ("completed", "failed", "error", "abandoned"):
    DSAR_ATTEMPTS.labels(_outcome)
    DSAR_EXPORT_DURATION.labels(_outcome)
for _result in ("valid", "invalid"):
    AUDIT_VERIFICATIONS.labels(_result)


_ACTION = re.compile(r"[a-z][a-z0-9_.]{0,63}")


def action_label(action: str) -> str:
    """An audit action as a label: the code's snake_case constants; anything else
    (a future caller passing a value) is one bucket, never itself."""
    return action if _ACTION.fullmatch(action) else "other"


def set_build_info(version: str, commit: str, key_ids: list[str]) -> None:
    BUILD_INFO.labels(version, commit or "unknown", ",".join(sorted(k for k in key_ids if k))).set(
        1
    )


class MetricsSettings:
    """KAIREON_METRICS_PORT (0 = off), KAIREON_METRICS_HOST."""

    def __init__(self, env: Mapping[str, str]) -> None:
        reader = EnvReader(env)
        self.port = reader.port("KAIREON_METRICS_PORT", 0, allow_zero=True)
        self.host = reader.text("KAIREON_METRICS_HOST", "0.0.0.0")  # noqa: S104
        self.sample_seconds = reader.number(
            "KAIREON_METRICS_SAMPLE_SECONDS", 15.0, exclusive_minimum=0.0
        )
        self.dsar_due_days = reader.number("KAIREON_DSAR_DUE_DAYS", 30.0, exclusive_minimum=0.0)
        self.flow_stuck_seconds = reader.number(
            "KAIREON_FLOW_STUCK_SECONDS", 900.0, exclusive_minimum=0.0
        )

    @property
    def enabled(self) -> bool:
        return self.port != 0


# Per-call recording (RPC interceptor, REST, statement and pool timing) is on
# when metrics are served (or a supervisor's worker records them); with
# KAIREON_METRICS_PORT=0 those hooks are not installed at all. The few
# capability counters (erasures, bundles, ...) always count: they cost nothing.
_recording = {"on": False}


def recording() -> bool:
    return _recording["on"]


def wanted(env: Mapping[str, str]) -> bool:
    """Whether this process records per-call metrics (KAIREON_METRICS_PORT, or a worker)."""
    return MetricsSettings(env).enabled or multiprocess_child()


def set_recording(on: bool) -> None:
    _recording["on"] = on


def multiprocess_child() -> bool:
    """A worker of the supervisor: records into the shared directory, serves nothing."""
    env = EnvReader(process_environment())
    return env.raw(MULTIPROC_ENV) is not None and env.raw("KAIREON_WORKER_INDEX") is not None


class MetricsServer:
    """The /metrics endpoint (prometheus_client's server: Prometheus text, and
    OpenMetrics when the scraper asks for it), in a daemon thread."""

    def __init__(self, server: Any, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread
        self.port: int = server.server_port

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def serve_metrics(
    settings: MetricsSettings, *, multiprocess_dir: str | None = None
) -> MetricsServer:
    """Serve this process's registry, or (the supervisor) the sum of its workers'."""
    registry: CollectorRegistry = REGISTRY
    if multiprocess_dir is not None:
        registry = CollectorRegistry()
        _multiprocess.MultiProcessCollector(registry, path=multiprocess_dir)  # type: ignore[no-untyped-call]
    server, thread = start_http_server(settings.port, settings.host, registry=registry)
    return MetricsServer(server, thread)


def mark_process_dead(pid: int, multiprocess_dir: str) -> None:
    """Drop a dead worker's live gauges (multi-process mode)."""
    _multiprocess.mark_process_dead(pid, multiprocess_dir)  # type: ignore[no-untyped-call]


_COMMIT = re.compile(r"[0-9a-f]{7,40}")


def build_labels(env: Mapping[str, str]) -> tuple[str, str]:
    """(version, commit): the installed package's version and GIT_SHA when it is one."""
    try:
        version = importlib.metadata.version("kaireon-server")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    sha = (EnvReader(env).raw("GIT_SHA") or "").lower()
    return version, sha if _COMMIT.fullmatch(sha) else "unknown"
