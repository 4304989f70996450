"""The one JSON reader of everything a verifier or the CLI is handed.

Python's json module takes what JSON does not allow or does not define: a key
twice in one object (the last silently wins, where another parser may keep the
first), NaN and Infinity, 1e400 (read as infinity), and nesting deep enough to
raise RecursionError. Evidence read two ways is not evidence: each is refused
here with a ValueError (a JSONDecodeError, so callers' handlers hold).
"""

from __future__ import annotations

import json
import math
from typing import Any


class StrictJSONError(json.JSONDecodeError):
    def __init__(self, message: str) -> None:
        super().__init__(message, "", 0)
        self.args = (message,)

    def __str__(self) -> str:
        return str(self.args[0])


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise StrictJSONError(f"duplicate key {key!r}")
            seen.add(key)
    return result


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise StrictJSONError(f"{text[:40]} is not a finite number")
    return value


def loads(data: str | bytes | bytearray) -> Any:
    """Parse JSON text, refusing duplicate keys, non-finite numbers and runaway nesting."""
    try:
        return json.loads(
            data,
            object_pairs_hook=_unique_pairs,
            parse_float=_finite,
            parse_constant=_finite,
        )
    except RecursionError:
        raise StrictJSONError("nested too deeply") from None
