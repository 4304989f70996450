"""kaireon_due_date (migration 0239), which CreateDsarRequest's one statement
uses for its lifecycle row, is requests/deadlines.py's due_date for a new
request: months from the receipt date clamped to the month's last day, then days."""

from __future__ import annotations

from datetime import date

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kaireon_server.platform.db import Database
from kaireon_server.requests.deadlines import DEFAULT_POLICIES, Policy, due_date

# Month ends, leap days and year ends are where calendar arithmetic goes wrong.
EDGES = [date(2024, 1, 31), date(2024, 2, 29), date(2025, 1, 31), date(2025, 12, 31)]


def _policy(months: int, days: int) -> Policy:
    return Policy("gdpr", months, days, 0, 0, False, "test")


async def _sql_due(db: Database, received: date, months: int, days: int) -> date:
    async with db.connection() as con:
        got: date = await con.fetchval(
            "SELECT kaireon_due_date($1, $2, $3)", received, months, days
        )
    return got


async def test_the_edges_and_the_default_policies(db: Database) -> None:
    for received in EDGES:
        for policy in DEFAULT_POLICIES.values():
            months, days = policy.period_months, policy.period_days
            assert await _sql_due(db, received, months, days) == due_date(received, policy)
    # Received 31 January: due 29 February in a leap year, 28 otherwise.
    assert await _sql_due(db, date(2024, 1, 31), 1, 0) == date(2024, 2, 29)
    assert await _sql_due(db, date(2025, 1, 31), 1, 0) == date(2025, 2, 28)


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    received=st.dates(min_value=date(2000, 1, 1), max_value=date(2100, 12, 31)),
    months=st.integers(0, 12),
    days=st.integers(0, 366),
)
async def test_any_date_and_period(db: Database, received: date, months: int, days: int) -> None:
    assert await _sql_due(db, received, months, days) == due_date(received, _policy(months, days))
