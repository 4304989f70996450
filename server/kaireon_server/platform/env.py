"""Typed, bounded readers of environment settings: the one place that parses them.

Every setting of the server, the gateway and the capabilities is read through
`EnvReader`, so the rules are the same everywhere:

- unset, empty or all-whitespace means "use the default";
- values are stripped before they are parsed (`" 5 "` is 5), and a value that
  does not parse, or falls outside its bounds, is a `ConfigurationError` that
  names the variable and the accepted range;
- the error quotes the value back (it helps a careless operator), except for
  readers marked secret, whose values are never echoed.

This module and `platform/errors.py` import nothing else from the server, so the
standalone REST adapter (`gateway/`) may use them too. It is also the only module
that touches `os.environ` (`process_environment`); tests/architecture/test_env_reads.py
holds every other module to that.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from kaireon_server.platform.errors import ConfigurationError

__all__ = ["ConfigurationError", "EnvReader", "process_environment", "quiet_grpc_core"]

# Plain ASCII decimal only: int() would also take "1_000" and other scripts' digits.
_INTEGER = re.compile(r"[+-]?[0-9]+")
# Plain ASCII decimal numbers too: float() would take "1_000" and other scripts' digits.
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_NON_FINITE = frozenset({"nan", "inf", "infinity"})
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
_PORT_OFF = frozenset({"off", "none", "disabled"})


# gRPC C-core writes plain-text lines to stderr (e.g. "fork_posix.cc:71] Other
# threads are currently calling into gRPC, skipping fork() handlers" at
# shutdown), which would break the JSON-lines log. Entry points apply these
# defaults before grpc is first imported; an operator's own value wins.
GRPC_CORE_DEFAULTS: Mapping[str, str] = {
    "GRPC_VERBOSITY": "NONE",
    # The server forks only to exec (subprocesses), never to keep running gRPC.
    "GRPC_ENABLE_FORK_SUPPORT": "false",
}


def quiet_grpc_core() -> None:
    """Apply GRPC_CORE_DEFAULTS to this process (and its children) where unset."""
    for name, value in GRPC_CORE_DEFAULTS.items():
        if not os.environ.get(name, "").strip():
            os.environ[name] = value


def process_environment() -> dict[str, str]:
    """A snapshot of this process's environment: what entry points hand to the readers."""
    return dict(os.environ)


class EnvReader:
    """Reads named settings from one mapping (normally `os.environ`)."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    @property
    def mapping(self) -> Mapping[str, str]:
        return self._env

    def raw(self, name: str) -> str | None:
        """The stripped value, or None when unset/empty."""
        value = self._env.get(name)
        if value is None:
            return None
        value = value.strip()
        return value or None

    def text(self, name: str, default: str) -> str:
        return self.raw(name) or default

    def optional_text(self, name: str) -> str | None:
        return self.raw(name)

    def secret(self, name: str) -> str | None:
        """A secret is taken as given (no stripping of inner bytes), never echoed."""
        value = self._env.get(name)
        return value if value and value.strip() else None

    def boolean(self, name: str, default: bool) -> bool:
        raw = self.raw(name)
        if raw is None:
            return default
        lowered = raw.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ConfigurationError(f"{name} must be true or false, got {raw!r}")

    def integer(
        self, name: str, default: int, *, minimum: int | None = None, maximum: int | None = None
    ) -> int:
        raw = self.raw(name)
        if raw is None:
            return default
        if not _INTEGER.fullmatch(raw):
            raise ConfigurationError(f"{name} must be an integer, got {raw!r}")
        value = int(raw)
        _check_bounds(name, value, minimum, maximum)
        return value

    def number(
        self,
        name: str,
        default: float,
        *,
        minimum: float | None = None,
        maximum: float | None = None,
        exclusive_minimum: float | None = None,
    ) -> float:
        raw = self.raw(name)
        if raw is None:
            return default
        plain = _NUMBER.fullmatch(raw) or raw.lower().lstrip("+-") in _NON_FINITE
        if not plain:  # (the non-finite words are refused below, by name)
            raise ConfigurationError(f"{name} must be a number, got {raw!r}")
        value = float(raw)
        if not math.isfinite(value):
            raise ConfigurationError(f"{name} must be a finite number, got {raw!r}")
        if exclusive_minimum is not None and not value > exclusive_minimum:
            raise ConfigurationError(f"{name} must be > {exclusive_minimum:g}, got {raw}")
        _check_bounds(name, value, minimum, maximum)
        return value

    def seconds_or_none(self, name: str, default: float | None) -> float | None:
        """Seconds; `0` or `none` means no limit (None)."""
        raw = self.raw(name)
        if raw is None:
            return default
        if raw.lower() == "none":
            return None
        value = self.number(name, 0.0, minimum=0.0)
        return value or None

    def path(self, name: str) -> Path | None:
        raw = self.raw(name)
        return Path(raw) if raw else None

    def port(self, name: str, default: int, *, allow_zero: bool = False) -> int:
        return self.integer(name, default, minimum=0 if allow_zero else 1, maximum=65535)

    def listen_port(self, name: str, default: int | None, *, zero_is_off: bool) -> int | None:
        """A port to listen on; `off`/`none`/`disabled` = None (do not listen), `auto` = 0
        (any free port). A bare `0` is "off" or "any free port" as the caller documents."""
        raw = self.raw(name)
        if raw is None:
            return default
        lowered = raw.lower()
        if lowered in _PORT_OFF:
            return None
        if lowered == "auto":
            return 0
        if not _INTEGER.fullmatch(raw):
            raise ConfigurationError(f"{name} must be a port number, 'auto' or 'off', got {raw!r}")
        port = self.port(name, 0, allow_zero=True)
        return None if port == 0 and zero_is_off else port

    def choice(
        self,
        name: str,
        default: str,
        choices: Iterable[str],
        *,
        normalise: Callable[[str], str] | None = None,
    ) -> str:
        allowed = tuple(choices)
        raw = self.raw(name)
        if raw is None:
            return default
        if normalise is not None:
            raw = normalise(raw)
        if raw not in allowed:
            raise ConfigurationError(f"{name} must be one of {', '.join(allowed)}; got {raw!r}")
        return raw

    def csv(self, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
        """Comma-separated items, each stripped; empty items are an error."""
        raw = self.raw(name)
        if raw is None:
            return default
        items = tuple(item.strip() for item in raw.split(","))
        if any(not item for item in items):
            raise ConfigurationError(f"{name} has an empty item: {raw!r}")
        return items


def _check_bounds(name: str, value: float, minimum: float | None, maximum: float | None) -> None:
    if minimum is not None and maximum is not None and not minimum <= value <= maximum:
        raise ConfigurationError(
            f"{name} must be between {minimum:g} and {maximum:g}, got {value:g}"
        )
    if minimum is not None and value < minimum:
        raise ConfigurationError(f"{name} must be >= {minimum:g}, got {value:g}")
    if maximum is not None and value > maximum:
        raise ConfigurationError(f"{name} must be <= {maximum:g}, got {value:g}")
