"""Statement time by the server function that ran it: the pool's connection class.

The label is `<module>.<function>` of the nearest kaireon_server frame that
awaited the statement (e.g. `erasure.repository.delete_rows`): a closed set
that the code defines, never the statement's values.
"""

from __future__ import annotations

import sys
import time
from types import CodeType, FrameType
from typing import Any

import asyncpg

from kaireon_server.platform.observability import metrics

_PREFIX = "kaireon_server."
_SKIP = ("kaireon_server.platform.observability.", "kaireon_server.platform.db.database")
_children: dict[str, Any] = {}


# The immediate caller's code object -> its histogram child: one frame look-up
# and one dict hit per statement once warm (repositories call asyncpg directly).
_by_code: dict[CodeType, Any] = {}


def _timer() -> Any:
    frame = sys._getframe(2)
    child = _by_code.get(frame.f_code)
    if child is not None:
        return child
    child = _histogram(_caller(frame))
    module = frame.f_globals.get("__name__", "")
    if module.startswith(_PREFIX) and not module.startswith(_SKIP):
        # Only a server function names itself; asyncpg's or the transaction
        # helper's code is shared by many callers and is looked up each time.
        _by_code[frame.f_code] = child
    return child


def _caller(frame: FrameType | None) -> str:
    for _ in range(12):
        if frame is None:
            break
        module = frame.f_globals.get("__name__", "")
        if module.startswith(_PREFIX) and not module.startswith(_SKIP):
            return f"{module[len(_PREFIX) :]}.{frame.f_code.co_name}"
        frame = frame.f_back
    return "platform.db.database"


def _histogram(function: str) -> Any:
    child = _children.get(function)
    if child is None:
        child = _children[function] = metrics.DB_STATEMENT.labels(function)
    return child


class InstrumentedConnection(asyncpg.Connection):  # type: ignore[misc]
    async def execute(self, *args: Any, **kwargs: Any) -> Any:
        histogram = _timer()
        began = time.perf_counter()
        try:
            return await super().execute(*args, **kwargs)
        finally:
            histogram.observe(time.perf_counter() - began)

    async def executemany(self, *args: Any, **kwargs: Any) -> Any:
        histogram = _timer()
        began = time.perf_counter()
        try:
            return await super().executemany(*args, **kwargs)
        finally:
            histogram.observe(time.perf_counter() - began)

    async def fetch(self, *args: Any, **kwargs: Any) -> Any:
        histogram = _timer()
        began = time.perf_counter()
        try:
            return await super().fetch(*args, **kwargs)
        finally:
            histogram.observe(time.perf_counter() - began)

    async def fetchval(self, *args: Any, **kwargs: Any) -> Any:
        histogram = _timer()
        began = time.perf_counter()
        try:
            return await super().fetchval(*args, **kwargs)
        finally:
            histogram.observe(time.perf_counter() - began)

    async def fetchrow(self, *args: Any, **kwargs: Any) -> Any:
        histogram = _timer()
        began = time.perf_counter()
        try:
            return await super().fetchrow(*args, **kwargs)
        finally:
            histogram.observe(time.perf_counter() - began)
