"""Due dates per regulation: the defaults, month-end clamping, extensions, pauses."""

from __future__ import annotations

from datetime import date

import pytest

from kaireon_server.platform.errors import InvalidArgument
from kaireon_server.requests.deadlines import (
    DEFAULT_POLICIES,
    Policy,
    add_months,
    due_date,
    validate_policy,
)

GDPR, UK, CCPA, LGPD = (DEFAULT_POLICIES[r] for r in ("gdpr", "uk_gdpr", "ccpa", "lgpd"))


@pytest.mark.parametrize(
    ("policy", "received", "due"),
    [
        # GDPR Art. 12(3): one month, same day number next month ...
        (GDPR, date(2026, 3, 5), date(2026, 4, 5)),
        # ... or that month's last day when it has no such day.
        (GDPR, date(2026, 1, 31), date(2026, 2, 28)),
        (GDPR, date(2028, 1, 31), date(2028, 2, 29)),  # leap year
        (GDPR, date(2026, 1, 29), date(2026, 2, 28)),
        (GDPR, date(2026, 3, 31), date(2026, 4, 30)),
        (GDPR, date(2026, 8, 31), date(2026, 9, 30)),
        (GDPR, date(2026, 12, 15), date(2027, 1, 15)),  # year boundary
        (GDPR, date(2026, 2, 28), date(2026, 3, 28)),  # not the end of March
        (UK, date(2026, 1, 31), date(2026, 2, 28)),
        (UK, date(2026, 5, 31), date(2026, 6, 30)),
        # CCPA/CPRA: 45 calendar days.
        (CCPA, date(2026, 1, 1), date(2026, 2, 15)),
        (CCPA, date(2026, 1, 31), date(2026, 3, 17)),
        (CCPA, date(2026, 12, 1), date(2027, 1, 15)),
        # LGPD: 15 days.
        (LGPD, date(2026, 1, 31), date(2026, 2, 15)),
        (LGPD, date(2026, 2, 20), date(2026, 3, 7)),
    ],
)
def test_due_date_per_regulation(policy: Policy, received: date, due: date) -> None:
    assert due_date(received, policy) == due


@pytest.mark.parametrize(
    ("policy", "received", "months", "days", "due"),
    [
        # Extension months count from receipt: 31 Jan + 3 months = 30 April (not 28 April).
        (GDPR, date(2026, 1, 31), 2, 0, date(2026, 4, 30)),
        (GDPR, date(2026, 1, 31), 1, 0, date(2026, 3, 31)),
        (UK, date(2026, 11, 30), 2, 0, date(2027, 2, 28)),
        # CCPA: 45 + 45 = 90 days.
        (CCPA, date(2026, 1, 1), 0, 45, date(2026, 4, 1)),
    ],
)
def test_extensions(policy: Policy, received: date, months: int, days: int, due: date) -> None:
    assert due_date(received, policy, extension_months=months, extension_days=days) == due


def test_paused_days_move_the_due_date() -> None:
    assert due_date(date(2026, 1, 31), GDPR, paused_days=3) == date(2026, 3, 3)
    assert due_date(date(2026, 1, 1), CCPA, paused_days=10) == date(2026, 2, 25)


def test_add_months_clamps_and_wraps() -> None:
    assert add_months(date(2026, 10, 31), 4) == date(2027, 2, 28)
    assert add_months(date(2026, 1, 15), 12) == date(2027, 1, 15)
    assert add_months(date(2026, 5, 31), 0) == date(2026, 5, 31)


def test_defaults_state_their_legal_reference() -> None:
    assert "Art. 12(3)" in GDPR.legal_reference and "1798.130" in CCPA.legal_reference
    assert "Art. 19" in LGPD.legal_reference and "UK GDPR" in UK.legal_reference
    assert (GDPR.period_months, GDPR.max_extension_months) == (1, 2)
    assert (CCPA.period_days, CCPA.max_extension_days) == (45, 45)
    assert (LGPD.period_days, LGPD.max_extension_days) == (15, 0)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"period_months": 1, "period_days": 10}, "policy.period_months"),
        ({"period_months": 0, "period_days": 0}, "policy.period_months"),
        ({"period_months": 13}, "policy.period_months"),
        ({"max_extension_days": 5}, "policy.max_extension_days"),
        ({"regulation": "hipaa"}, "policy.regulation"),
    ],
)
def test_bad_overrides_are_refused(changes: dict[str, object], field: str) -> None:
    base = {**GDPR.__dict__, **changes}
    with pytest.raises(InvalidArgument) as caught:
        validate_policy(Policy(**base))  # type: ignore[arg-type]
    assert caught.value.metadata["field"] == field
