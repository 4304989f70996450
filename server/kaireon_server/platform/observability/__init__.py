"""Metrics (Prometheus) and traces (OpenTelemetry); docs/OPERATIONS.md."""
