"""KAIREON_METRICS_* settings: parsed by EnvReader, bad values refused by name."""

from __future__ import annotations

import pytest

from kaireon_server.app import App
from kaireon_server.platform.errors import ConfigurationError
from kaireon_server.platform.observability.metrics import MetricsSettings


def test_metrics_are_off_by_default():
    settings = MetricsSettings({})
    assert settings.port == 0 and not settings.enabled
    assert settings.dsar_due_days == 30.0
    assert settings.flow_stuck_seconds == 900.0


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("KAIREON_METRICS_PORT", "x"),
        ("KAIREON_METRICS_PORT", "70000"),
        ("KAIREON_METRICS_PORT", "-1"),
        ("KAIREON_METRICS_SAMPLE_SECONDS", "0"),
        ("KAIREON_DSAR_DUE_DAYS", "nan"),
        ("KAIREON_FLOW_STUCK_SECONDS", "-5"),
    ],
)
def test_bad_values_are_refused_naming_the_variable(name: str, value: str):
    with pytest.raises(ConfigurationError, match=name):
        MetricsSettings({name: value})


def test_the_default_server_serves_no_metrics(app: App):
    assert app.metrics_port == 0
