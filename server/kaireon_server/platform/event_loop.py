"""The event loop a Kaireon process runs on (`KAIREON_EVENT_LOOP`).

uvloop by default: the event loop and its socket transports take most of a
call's CPU here (the py-spy profiles of perf/baselines/), and uvloop does that
work in C on libuv. `asyncio` selects the standard library's loop, for a
platform uvloop does not build on or to rule the loop out while debugging.
The server, its workers, the standalone gateway and the perf harness's own
servers all start through `run`, so a measured ratio compares like with like.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from kaireon_server.platform.env import EnvReader, process_environment
from kaireon_server.platform.errors import ConfigurationError

__all__ = ["DEFAULT", "LOOPS", "configured", "from_env", "loop_factory", "run", "running_loop_name"]

LOOPS = ("uvloop", "asyncio")
DEFAULT = "uvloop"
ENV = "KAIREON_EVENT_LOOP"

T = TypeVar("T")


def from_env(read: EnvReader) -> str:
    return read.choice(ENV, DEFAULT, LOOPS, normalise=str.lower)


def configured() -> str:
    """The loop this process's environment names: for code without Settings (the
    perf harness's servers, the test suite)."""
    return from_env(EnvReader(process_environment()))


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    if name == "asyncio":
        # What asyncio.new_event_loop makes on Unix, whatever policy is set.
        return asyncio.SelectorEventLoop
    if name != "uvloop":
        raise ConfigurationError(f"{ENV} must be one of {', '.join(LOOPS)}; got {name!r}")
    try:
        import uvloop
    except ImportError:
        raise ConfigurationError(
            f"{ENV}=uvloop but uvloop is not installed here; install it or set {ENV}=asyncio"
        ) from None
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T], loop: str) -> T:
    """`asyncio.run(main)` on the named loop."""
    try:
        factory = loop_factory(loop)
    except ConfigurationError:
        main.close()  # never awaited: say so quietly, not with a RuntimeWarning
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


def running_loop_name() -> str:
    """What the running loop is, for the start-up log: `uvloop` or `asyncio`."""
    module = type(asyncio.get_running_loop()).__module__
    return "uvloop" if module.split(".")[0] == "uvloop" else "asyncio"
