"""KAIREON_DSAR_WORKERS bounds the exports one process runs at once: what an
operator may write, and what is refused before the server starts."""

from __future__ import annotations

import pytest

from kaireon_server.dsar.settings import DsarSettings
from kaireon_server.platform.errors import ConfigurationError


@pytest.mark.parametrize(("raw", "workers"), [("", 4), ("0", 0), ("1", 1), (" 8\n", 8), ("64", 64)])
def test_the_bound_takes_a_plain_integer_from_0_to_64(raw: str, workers: int) -> None:
    assert DsarSettings.from_env({"KAIREON_DSAR_WORKERS": raw}).workers == workers


@pytest.mark.parametrize("raw", ["65", "-1", "1e3", "4.0", "nan", "four", "0x4", "4 4"])
def test_anything_else_is_refused_naming_the_variable(raw: str) -> None:
    with pytest.raises(ConfigurationError, match="KAIREON_DSAR_WORKERS"):
        DsarSettings.from_env({"KAIREON_DSAR_WORKERS": raw})
