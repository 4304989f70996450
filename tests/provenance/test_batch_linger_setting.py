"""KAIREON_PROVENANCE_BATCH_LINGER_MS: milliseconds in, seconds out, bounded;
anything else refuses to start."""

from __future__ import annotations

import pytest

from kaireon_server.app import App
from kaireon_server.platform.config import Settings
from kaireon_server.platform.errors import ConfigurationError
from kaireon_server.provenance.service import BATCH_LINGER_ENV, _batch_linger
from tests.support.server import base_env


def test_default_and_explicit_values() -> None:
    assert _batch_linger({}) == 0.001
    assert _batch_linger({BATCH_LINGER_ENV: "0"}) == 0.0
    assert _batch_linger({BATCH_LINGER_ENV: "2.5"}) == 0.0025


@pytest.mark.parametrize("raw", ["-1", "21", "1e400", "1ms", "nan", "inf", "0x1", "1,5"])
def test_values_out_of_bounds_or_not_numbers_are_refused(raw: str) -> None:
    with pytest.raises(ConfigurationError, match=BATCH_LINGER_ENV):
        _batch_linger({BATCH_LINGER_ENV: raw})


async def test_a_bad_value_stops_the_server_at_start(database_url: str) -> None:
    app = App(Settings.from_env(base_env(database_url, **{BATCH_LINGER_ENV: "1e400"})))
    with pytest.raises(ConfigurationError, match=BATCH_LINGER_ENV):
        await app.start()
