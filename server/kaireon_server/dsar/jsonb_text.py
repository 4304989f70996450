"""Canonical JSON of PostgreSQL's jsonb text: the bytes kaireon_jcs (migration
0021) makes, made in Python for a small export's rows (plan.py, MARK).

kaireon_jcs casts every number to float8, so integers beyond 2^53 lose digits
as a double does, and a number no double holds (an overflow, or a nonzero
value that underflows to 0) is an error that fails the export. The same here:
a small export and a streamed one are the same bytes, or both fail.
"""

from __future__ import annotations

import json
import math

from kaireon_server.dsar.plan import MARK, MAX_SAFE_INTEGER
from kaireon_server.platform.canonical import canonical_json


class NumberOutOfRange(ValueError):
    """A jsonb number no double holds (kaireon_jcs fails on it too)."""


def _double(text: str) -> float:
    value = float(text)
    mantissa = text.partition("e")[0].partition("E")[0]
    if math.isinf(value) or (value == 0.0 and mantissa.strip("-+0.") != ""):
        # The number itself stays out of the message: it is the subject's data.
        raise NumberOutOfRange("a jsonb number out of the range of a double")
    return value


def _integer(text: str) -> int | float:
    # Short enough to parse cheaply; beyond 2^53 it is a double, like float8's.
    if len(text) <= 17:
        value = int(text)
        if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            return value
    return _double(text)


def _constant(name: str) -> float:
    raise NumberOutOfRange(f"{name} is not JSON")  # jsonb never prints one


def canonical_jsonb(text: str) -> str:
    """The canonical JSON text of one jsonb value's text output."""
    value = json.loads(text, parse_float=_double, parse_int=_integer, parse_constant=_constant)
    return canonical_json(value).decode()


class Finisher:
    """Canonical rows from MARKed ones, each distinct jsonb text done once:
    event attributes repeat a lot within one subject's rows."""

    def __init__(self) -> None:
        self._done: dict[str, str] = {}

    def row(self, text: str) -> str:
        if MARK not in text:
            return text
        parts = text.split(MARK)
        if len(parts) % 2 == 0:
            raise ValueError("a MARK without its pair in an export row")
        for i in range(1, len(parts), 2):
            raw = parts[i]
            done = self._done.get(raw)
            if done is None:
                done = self._done[raw] = canonical_jsonb(raw)
            parts[i] = done
        return "".join(parts)
