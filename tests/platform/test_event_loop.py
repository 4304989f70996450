"""KAIREON_EVENT_LOOP: uvloop by default, asyncio on request, anything else refused
(at start too: tests/platform/test_process.py)."""

from __future__ import annotations

import asyncio
import inspect
import sys

import pytest

from kaireon_server.gateway.settings import GatewaySettings
from kaireon_server.platform import event_loop
from kaireon_server.platform.config import Settings
from kaireon_server.platform.errors import ConfigurationError

BASE = {"KAIREON_TRUST_HEADERS": "true"}


def test_uvloop_unless_told_otherwise() -> None:
    assert Settings.from_env(BASE).event_loop == "uvloop"
    assert GatewaySettings.from_env({}).event_loop == "uvloop"
    # Stripped as every setting is (platform/env.py): a trailing newline is no new word.
    cases = (
        ("asyncio", "asyncio"),
        (" UVLOOP ", "uvloop"),
        ("", "uvloop"),
        ("asyncio\n", "asyncio"),
    )
    for raw, expected in cases:
        env = {**BASE, "KAIREON_EVENT_LOOP": raw}
        assert Settings.from_env(env).event_loop == expected
        assert GatewaySettings.from_env(env).event_loop == expected


@pytest.mark.parametrize("raw", ["tokio", "uvloop,asyncio", "asyncio\n1"])
def test_an_unknown_loop_is_a_configuration_error(raw: str) -> None:
    for read in (Settings.from_env, GatewaySettings.from_env):
        with pytest.raises(ConfigurationError, match="KAIREON_EVENT_LOOP must be one of"):
            read({**BASE, "KAIREON_EVENT_LOOP": raw})


@pytest.mark.parametrize("name", event_loop.LOOPS)
def test_run_runs_on_the_named_loop(name: str) -> None:
    async def which() -> str:
        return event_loop.running_loop_name()

    assert event_loop.run(which(), name) == name


def test_run_refuses_an_unknown_loop_and_closes_the_coroutine() -> None:
    """Closed, not left for the garbage collector's "never awaited" warning."""

    async def never() -> None:
        raise AssertionError("must not run")

    main = never()
    with pytest.raises(ConfigurationError, match="KAIREON_EVENT_LOOP must be one of"):
        event_loop.run(main, "tokio")
    assert inspect.getcoroutinestate(main) == inspect.CORO_CLOSED


def test_uvloop_asked_for_but_missing_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A platform without uvloop (its wheel is not installed on Windows): the error
    says what to set instead, and the coroutine is closed, not left unawaited."""
    monkeypatch.setitem(sys.modules, "uvloop", None)  # `import uvloop` raises ImportError

    async def never() -> None:
        raise AssertionError("must not run")

    main = never()
    with pytest.raises(
        ConfigurationError, match=r"uvloop is not installed.*KAIREON_EVENT_LOOP=asyncio"
    ):
        event_loop.run(main, "uvloop")
    assert inspect.getcoroutinestate(main) == inspect.CORO_CLOSED


async def test_the_suite_runs_on_the_loop_the_server_would() -> None:
    """tests/conftest.py's loop hook: in-process servers meet the production loop
    (uvloop), or asyncio when the run sets it (.ci/run's PostgreSQL 15 pass)."""
    wanted = event_loop.configured()
    assert event_loop.running_loop_name() == wanted
    assert isinstance(asyncio.get_running_loop(), asyncio.AbstractEventLoop)
