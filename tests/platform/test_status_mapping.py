"""asyncpg errors the interceptor maps to a status a client can act on."""

from __future__ import annotations

import asyncpg
import pytest
from google.rpc import code_pb2, error_details_pb2

from kaireon_server.platform.rpc.status import status_for


def _reason(status) -> str:
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    return str(info.reason)


@pytest.mark.parametrize(
    ("exc", "code", "reason"),
    [
        # PostgreSQL's max_connections reached: backpressure, as for a saturated pool.
        (
            asyncpg.TooManyConnectionsError("sorry, too many clients already"),
            code_pb2.RESOURCE_EXHAUSTED,
            "DB_CONNECTIONS_EXHAUSTED",
        ),
        (
            asyncpg.QueryCanceledError("canceling statement"),
            code_pb2.DEADLINE_EXCEEDED,
            "DB_TIMEOUT",
        ),
        (asyncpg.DeadlockDetectedError("deadlock"), code_pb2.ABORTED, "CONCURRENT_UPDATE"),
        # A stalled connection (KAIREON_DB_COMMAND_TIMEOUT) vs a lost one.
        (TimeoutError("no answer from 10.0.0.5 in 35 s"), code_pb2.UNAVAILABLE, "TIMEOUT"),
        (ConnectionResetError("reset by peer"), code_pb2.UNAVAILABLE, "DB_UNAVAILABLE"),
    ],
)
def test_database_errors_map_to_statuses(exc: BaseException, code: int, reason: str) -> None:
    status = status_for(exc)
    assert (status.code, _reason(status)) == (code, reason)
    # The database's own text (it may quote values) never reaches the client.
    assert str(exc) not in status.message
