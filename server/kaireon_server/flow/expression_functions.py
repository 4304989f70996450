"""Runtime semantics of the expression language: comparisons, arithmetic, functions.

Only the functions in FUNCTIONS can be called from an expression; each checks
the JSON types of its arguments and raises ExpressionError (whose messages name
types, never values) instead of guessing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any


class ExpressionError(ValueError):
    """A syntax error (with position) or an evaluation error; messages hold no values."""

    def __init__(self, message: str, position: int | None = None) -> None:
        super().__init__(message if position is None else f"{message} at position {position}")
        self.position = position


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if _is_number(value):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    return "object"


def equal_values(a: Any, b: Any) -> bool:
    # Strict: true is not 1, "1" is not 1.
    if _is_number(a) and _is_number(b):
        return bool(a == b)
    return _kind(a) == _kind(b) and bool(a == b)


def order_values(op: str, a: Any, b: Any) -> bool | None:
    if a is None or b is None:
        return None
    if not ((_is_number(a) and _is_number(b)) or (isinstance(a, str) and isinstance(b, str))):
        raise ExpressionError(f"cannot compare {_kind(a)} with {_kind(b)} using {op}")
    if op == "<":
        return bool(a < b)
    if op == "<=":
        return bool(a <= b)
    if op == ">":
        return bool(a > b)
    return bool(a >= b)


def contains_values(item: Any, container: Any) -> bool | None:
    if container is None or item is None:
        return None
    if isinstance(container, list):
        return any(equal_values(item, x) for x in container)
    if isinstance(container, str) and isinstance(item, str):
        return item in container
    raise ExpressionError(f"cannot test {_kind(item)} in {_kind(container)}")


def arith_values(op: str, a: Any, b: Any) -> Any:
    if a is None or b is None:
        return None
    if op == "+" and isinstance(a, str) and isinstance(b, str):
        return a + b
    if not (_is_number(a) and _is_number(b)):
        raise ExpressionError(f"cannot apply {op} to {_kind(a)} and {_kind(b)}")
    if op == "+":
        result = a + b
    elif op == "-":
        result = a - b
    elif op == "*":
        result = a * b
    elif b == 0:
        raise ExpressionError("division by zero")
    elif op == "/":
        result = a / b
    else:
        result = a % b
    if isinstance(result, float) and not math.isfinite(result):
        raise ExpressionError("arithmetic result is not a finite number")
    return result


def truthy(value: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    raise ExpressionError(f"expected true, false or null, got {_kind(value)}")


def _need(kind: str, name: str, value: Any) -> None:
    ok = _is_number(value) if kind == "number" else _kind(value) == kind
    if not ok:
        raise ExpressionError(f"{name}() expects a {kind}, got {_kind(value)}")


def _fn_len(v: Any) -> Any:
    if v is None:
        return None
    if not isinstance(v, str | list | dict):
        raise ExpressionError(f"len() expects a string or list, got {_kind(v)}")
    return len(v)


def _fn_str(v: Any) -> Any:
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    if _is_number(v):
        return str(v)
    raise ExpressionError(f"str() cannot convert {_kind(v)}")


def _fn_number(target: type) -> Callable[[Any], Any]:
    def convert(v: Any) -> Any:
        if v is None:
            return None
        if isinstance(v, bool):
            raise ExpressionError(f"{target.__name__}() cannot convert boolean")
        try:
            return target(v)
        except (TypeError, ValueError, OverflowError):
            raise ExpressionError(f"{target.__name__}() cannot convert this {_kind(v)}") from None

    return convert


def _strfn(name: str, op: Callable[[str], Any]) -> Callable[[Any], Any]:
    def apply(v: Any) -> Any:
        if v is None:
            return None
        _need("string", name, v)
        return op(v)

    return apply


def _str2(name: str, op: Callable[[str, str], Any]) -> Callable[[Any, Any], Any]:
    def apply(a: Any, b: Any) -> Any:
        if a is None or b is None:
            return None
        _need("string", name, a)
        _need("string", name, b)
        return op(a, b)

    return apply


def _fn_round(v: Any, digits: Any = 0) -> Any:
    if v is None:
        return None
    _need("number", "round", v)
    if not isinstance(digits, int) or isinstance(digits, bool) or not 0 <= digits <= 15:
        raise ExpressionError("round() digits must be an integer from 0 to 15")
    return round(v, digits) if digits else round(v)


def _fn_abs(v: Any) -> Any:
    if v is None:
        return None
    _need("number", "abs", v)
    return abs(v)


def _fn_substr(s: Any, start: Any, length: Any = None) -> Any:
    if s is None:
        return None
    _need("string", "substr", s)
    if not isinstance(start, int) or isinstance(start, bool) or start < 0:
        raise ExpressionError("substr() start must be a non-negative integer")
    if length is None:
        return s[start:]
    if not isinstance(length, int) or isinstance(length, bool) or length < 0:
        raise ExpressionError("substr() length must be a non-negative integer")
    return s[start : start + length]


def _extreme(name: str, pick: Callable[[Sequence[Any]], Any]) -> Callable[..., Any]:
    def apply(*values: Any) -> Any:
        present = [v for v in values if v is not None]
        if not present:
            return None
        if not (all(_is_number(v) for v in present) or all(isinstance(v, str) for v in present)):
            raise ExpressionError(f"{name}() needs all numbers or all strings")
        return pick(present)

    return apply


def _fn_concat(*values: Any) -> str:
    return "".join(_fn_str(v) for v in values if v is not None)


# name -> (function, min args, max args or None for variadic)
FUNCTIONS: dict[str, tuple[Callable[..., Any], int, int | None]] = {
    "lower": (_strfn("lower", str.lower), 1, 1),
    "upper": (_strfn("upper", str.upper), 1, 1),
    "trim": (_strfn("trim", str.strip), 1, 1),
    "len": (_fn_len, 1, 1),
    "startswith": (_str2("startswith", str.startswith), 2, 2),
    "endswith": (_str2("endswith", str.endswith), 2, 2),
    "contains": (_str2("contains", lambda a, b: b in a), 2, 2),
    "substr": (_fn_substr, 2, 3),
    "concat": (_fn_concat, 1, None),
    "str": (_fn_str, 1, 1),
    "int": (_fn_number(int), 1, 1),
    "float": (_fn_number(float), 1, 1),
    "abs": (_fn_abs, 1, 1),
    "round": (_fn_round, 1, 2),
    "min": (_extreme("min", min), 1, None),
    "max": (_extreme("max", max), 1, None),
    "coalesce": (lambda *vs: next((v for v in vs if v is not None), None), 1, None),
    "is_null": (lambda v: v is None, 1, 1),
}
# `if` is special: only the chosen branch is evaluated.
LAZY_FUNCTIONS = {"if": 3}
