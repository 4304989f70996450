"""Stopping background tasks: the one way the server cancels its loops.

`task.cancel(); with suppress(CancelledError): await task` has two faults:
- it swallows a cancellation of the *caller* too (a bounded shutdown step could
  not be cut short);
- it waits forever for a task that swallowed its cancellation, as a loop built on
  Python 3.11's `asyncio.wait_for` does when the cancel lands just as the inner
  await completes (banned in this code base for that reason; use
  `asyncio.timeout`).

`cancel_and_wait` cancels, waits with `asyncio.wait` (which never swallows the
caller's own cancellation), and cancels again, with a warning, a task that is
still running seconds later.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger(__name__)

# How long a cancelled task may take to end before it is cancelled once more.
RECANCEL_SECONDS = 5.0


async def cancel_and_wait(*tasks: asyncio.Task[Any] | None) -> None:
    """Cancel `tasks` (None entries are skipped) and return once every one ended.

    An exception a task ended with (other than its cancellation) is raised after
    all have ended: a failed loop is not hidden by its shutdown.
    """
    pending = {t for t in tasks if t is not None}
    ended = list(pending)
    for task in pending:
        task.cancel()
    while pending:
        _, pending = await asyncio.wait(pending, timeout=RECANCEL_SECONDS)
        for task in pending:
            log.warning(
                "task ignored its cancellation; cancelling again", extra={"task": task.get_name()}
            )
            task.cancel()
    for task in ended:
        if not task.cancelled() and (failure := task.exception()) is not None:
            raise failure
