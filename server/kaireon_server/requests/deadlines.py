"""Statutory deadlines per regulation, and the due-date arithmetic.

A request is due at the end of its due date (UTC). The due date is

    receipt date + period + extension + days the clock was stopped

Month periods use calendar-month arithmetic (Regulation (EEC, Euratom)
No 1182/71, Art. 3(2)(c), which the EDPB applies to Art. 12(3) GDPR in
Guidelines 01/2022 on the right of access, para. 159-160): the period ends on
the same day number in the month the period reaches, or on that month's last
day when it has no such day (received 31 January -> due 28 February, or 29 in
a leap year). Months are always counted from the receipt date, so an
extension of a 31 January request ends on 30 April, not 28 April.
Day periods are calendar days. Weekends and public holidays do not move the
date (Art. 3(4) of 1182/71 would move it later; the earlier date is the safe one).
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass, replace
from datetime import date, timedelta

from kaireon_server.platform.errors import InvalidArgument

REGULATIONS = ("gdpr", "uk_gdpr", "ccpa", "lgpd")


@dataclass(frozen=True)
class Policy:
    """How long a regulation gives to answer, how far it may be extended, and
    whether approval waits for a verified identity."""

    regulation: str
    period_months: int
    period_days: int
    max_extension_months: int
    max_extension_days: int
    require_verification: bool
    legal_reference: str
    overridden: bool = False

    @property
    def months_based(self) -> bool:
        return self.period_months > 0


DEFAULT_POLICIES: dict[str, Policy] = {
    "gdpr": Policy(
        "gdpr",
        1,
        0,
        2,
        0,
        True,
        "GDPR Art. 12(3): one month of receipt, extendable by two further months; "
        "Art. 12(6): identity verification",
    ),
    "uk_gdpr": Policy(
        "uk_gdpr",
        1,
        0,
        2,
        0,
        True,
        "UK GDPR Art. 12(3): one month of receipt, extendable by two further months",
    ),
    "ccpa": Policy(
        "ccpa",
        0,
        45,
        0,
        45,
        True,
        "Cal. Civ. Code 1798.130(a)(2)(A) (CCPA/CPRA): 45 calendar days, extendable once "
        "by 45 days; 1798.140(ak): verifiable consumer request",
    ),
    "lgpd": Policy(
        "lgpd",
        0,
        15,
        0,
        0,
        True,
        "LGPD Art. 19(II): complete declaration within 15 days of the request",
    ),
}


def validate_regulation(value: str, field_name: str = "regulation") -> str:
    if value not in REGULATIONS:
        raise InvalidArgument.field(
            field_name, f"unknown regulation; supported: {', '.join(REGULATIONS)}"
        )
    return value


def validate_policy(policy: Policy) -> Policy:
    """A tenant override: one period unit, extensions in the same unit, bounded."""
    validate_regulation(policy.regulation, "policy.regulation")
    if (policy.period_months > 0) == (policy.period_days > 0):
        raise InvalidArgument.field(
            "policy.period_months", "exactly one of period_months and period_days must be set"
        )
    bounds = {
        "policy.period_months": (policy.period_months, 12),
        "policy.period_days": (policy.period_days, 366),
        "policy.max_extension_months": (policy.max_extension_months, 12),
        "policy.max_extension_days": (policy.max_extension_days, 366),
    }
    for name, (value, high) in bounds.items():
        if not 0 <= value <= high:
            raise InvalidArgument.field(name, f"must be between 0 and {high}")
    if policy.months_based and policy.max_extension_days:
        raise InvalidArgument.field(
            "policy.max_extension_days", "a month-based period extends in months"
        )
    if not policy.months_based and policy.max_extension_months:
        raise InvalidArgument.field(
            "policy.max_extension_months", "a day-based period extends in days"
        )
    default = DEFAULT_POLICIES[policy.regulation]
    return replace(policy, legal_reference=default.legal_reference, overridden=True)


def add_months(start: date, months: int) -> date:
    """Same day number `months` later, clamped to the last day of that month."""
    index = start.month - 1 + months
    year, month = start.year + index // 12, index % 12 + 1
    return date(year, month, min(start.day, calendar.monthrange(year, month)[1]))


def due_date(
    received: date,
    policy: Policy,
    *,
    extension_months: int = 0,
    extension_days: int = 0,
    paused_days: int = 0,
) -> date:
    """The last day to answer (see the module docstring for the rule)."""
    months = add_months(received, policy.period_months + extension_months)
    return months + timedelta(days=policy.period_days + extension_days + paused_days)
