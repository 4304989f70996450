"""RFC 8785 (JCS) canonical JSON, fast: the same bytes as `rfc8785.dumps`, mostly in C.

Why: every bundle emission canonicalises about 12 KB of JSON (and hashes every
model state the same way); the maintained `rfc8785` package does it in pure
Python, which was half the CPU of an emission. The standard library's C
encoder already escapes strings as JCS does with ``ensure_ascii=False``
(``\\b \\t \\n \\f \\r``, other controls as lower-case ``\\u00xx``, nothing else
escaped) and, with ``sort_keys``, orders keys as JCS does unless a key has a
character beyond the BMP (JCS sorts by UTF-16 code units). Python's float
repr equals JCS's ECMAScript form for non-integral values between 1e-4 and
1e16. So a quick check pass decides: plain values go straight to the C
encoder; otherwise one pass rebuilds the value (keys in UTF-16 order, floats
as placeholders that `rfc8785` itself formats) before the C encoder writes it.

Anything unusual (NUL characters, which the placeholders use; non-string keys;
values of other types) falls back to `rfc8785.dumps`, so the result, or the
error, is always the reference implementation's. A property test compares the
two on arbitrary JSON values.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import rfc8785

_INT_MAX = 2**53 - 1
_PLACEHOLDER = re.compile(r'"\\u0000(\d+)\\u0000"')


class _Fallback(Exception):
    """The value needs the reference implementation."""


def _utf16(key: str) -> bytes:
    return key.encode("utf-16-be", "surrogatepass")


def _prepare(value: Any, floats: list[float]) -> Any:
    if isinstance(value, str):
        if "\x00" in value:
            raise _Fallback
        return value
    if value is None or value is True or value is False:
        return value
    if isinstance(value, int):
        if type(value) is not int or not -_INT_MAX <= value <= _INT_MAX:
            raise _Fallback
        return value
    if isinstance(value, float):
        if type(value) is not float:
            raise _Fallback
        floats.append(value)
        return f"\x00{len(floats) - 1}\x00"
    if isinstance(value, dict):
        keys = list(value)
        if not all(type(k) is str for k in keys):
            raise _Fallback
        # JCS orders keys by UTF-16 code units; for ASCII keys that is plain order.
        ordered = sorted(keys) if all(k.isascii() for k in keys) else sorted(keys, key=_utf16)
        result = {}
        for key in ordered:
            if "\x00" in key:
                raise _Fallback
            result[key] = _prepare(value[key], floats)
        return result
    if isinstance(value, list | tuple):
        return [_prepare(item, floats) for item in value]
    raise _Fallback


def _plain_float(value: float) -> bool:
    """Whether Python's repr of `value` is already the ECMAScript form JCS wants.

    Both print the shortest digits that round-trip; they differ only in when
    they switch to exponents (Python below 1e-4 and from 1e16, ECMAScript below
    1e-6 and from 1e21) and in integral values ("2.0" against "2").
    """
    magnitude = abs(value)
    return 1e-4 <= magnitude < 1e16 and not value.is_integer()


def _is_plain(value: Any) -> bool:
    """Whether the C encoder with sort_keys already writes `value` canonically.

    Iterative (a stack, no recursion): this pass runs on every bundle.
    """
    stack = [value]
    pop, extend = stack.pop, stack.extend
    while stack:
        item = pop()
        kind = type(item)
        if kind is str or item is None or kind is bool:
            continue
        if kind is dict:
            for key in item:
                # Astral characters sort differently in UTF-16 than by code point.
                if type(key) is not str or not (key.isascii() or max(key, default="") <= "\uffff"):
                    return False
            extend(item.values())
        elif kind is list:
            extend(item)
        elif kind is int:
            if not -_INT_MAX <= item <= _INT_MAX:
                return False
        elif kind is float:
            if not _plain_float(item):
                return False
        else:
            return False
    return True


def canonical_json(value: Any) -> bytes:
    """RFC 8785 canonical JSON bytes of `value` (identical to `rfc8785.dumps`)."""
    try:
        if _is_plain(value):
            # The common case: plain keys and numbers, the C encoder alone.
            text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
            return text.encode("utf-8")
        floats: list[float] = []
        prepared = _prepare(value, floats)
        text = json.dumps(prepared, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        if floats:
            # rfc8785 formats (and range-checks) each float exactly as the spec says.
            text = _PLACEHOLDER.sub(
                lambda m: bytes(rfc8785.dumps(floats[int(m.group(1))])).decode(), text
            )
        return text.encode("utf-8")
    except (_Fallback, UnicodeEncodeError, ValueError):
        return bytes(rfc8785.dumps(value))


def canonical_object(members: Mapping[str, bytes]) -> bytes:
    """The canonical JSON of an object whose member values are already canonical bytes.

    Equal to `canonical_json({k: parsed(v) ...})`: JCS writes members sorted by the
    UTF-16 code units of their keys and each value independently of its context.
    """
    keys = list(members)
    ordered = sorted(keys) if all(k.isascii() for k in keys) else sorted(keys, key=_utf16)
    return b"{" + b",".join(canonical_json(k) + b":" + members[k] for k in ordered) + b"}"
