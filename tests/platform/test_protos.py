"""The proto sources: the vendored google/api copy buf reads equals the wheel's, and
every served method declares its minimum role."""

from __future__ import annotations

from pathlib import Path

import google.api

from kaireon_client.client import SERVICES
from kaireon_server.platform.auth.policy import build_policy
from tests.support.server import ROOT

VENDORED = ROOT / "third_party" / "googleapis" / "google" / "api"


def test_vendored_google_api_protos_equal_the_wheel() -> None:
    wheel = Path(next(iter(google.api.__path__)))
    vendored = sorted(VENDORED.glob("*.proto"))
    assert [p.name for p in vendored] == ["annotations.proto", "http.proto", "httpbody.proto"]
    for path in vendored:
        assert path.read_bytes() == (wheel / path.name).read_bytes(), path.name


def test_every_kaireon_method_declares_a_min_role() -> None:
    policy = build_policy(SERVICES)
    methods = sum(len(s.methods) for s in SERVICES)
    assert len(policy) == methods
    assert methods >= 27  # the five services' RPCs as of the transparency-log RPCs
