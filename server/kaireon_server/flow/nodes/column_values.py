"""Record values -> the types of the table columns a sink writes them to.

Records that came through the API carry every JSON number as a double: a
protobuf Struct has no integers, so `{"points": 1}` arrives as 1.0, and
PostgreSQL refuses "1.0" for an integer column (jsonb_populate_recordset,
SQLSTATE 22P02) with a message that names neither the record nor the field.
Here integral numbers become integers for integer and numeric columns, and a
value that does not fit fails the node naming the record index and the field,
never the value (records may hold personal data).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

# information_schema.columns.data_type -> the inclusive bound of its integers.
_INTEGER_BOUNDS = {"smallint": 2**15, "integer": 2**31, "bigint": 2**63}
_FLOAT4_MAX = 3.4028234663852886e38
_INTEGER_TEXT = re.compile(r"\s*[+-]?\d{1,30}\s*")


class ValueMismatch(ValueError):
    """The value cannot go into the column; the message completes 'field ...'."""


def fit_value(data_type: str, value: Any) -> Any:
    """The value as the column's type takes it; raises ValueMismatch."""
    if value is None:
        return None
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueMismatch("is not a finite number")
    bound = _INTEGER_BOUNDS.get(data_type)
    if bound is not None:
        return _integer(value, bound, data_type)
    if data_type == "numeric" and isinstance(value, float) and value.is_integer():
        return int(value)  # exact: 1.0 is stored as 1, 1e20 as 100000000000000000000
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if data_type == "real" and is_number and abs(value) > _FLOAT4_MAX:
        raise ValueMismatch("is out of range for column type real")
    return value


def _integer(value: Any, bound: int, data_type: str) -> int:
    if isinstance(value, bool):
        raise ValueMismatch(f"is a boolean, column type {data_type} needs an integer")
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueMismatch(f"is not a whole number, column type {data_type} needs one")
        number = int(value)
    elif isinstance(value, int):
        number = value
    elif isinstance(value, str) and _INTEGER_TEXT.fullmatch(value):
        number = int(value)
    else:
        raise ValueMismatch(f"is not an integer, column type {data_type} needs one")
    if not -bound <= number < bound:
        raise ValueMismatch(f"is out of range for column type {data_type}")
    return number


def fit_record(record: Mapping[str, Any], column_types: Mapping[str, str]) -> dict[str, Any]:
    """A copy of the record with each value fitted to its column; raises
    ValueMismatch with the field name in front."""
    fitted: dict[str, Any] = {}
    for name, value in record.items():
        try:
            fitted[name] = fit_value(column_types.get(name, ""), value)
        except ValueMismatch as exc:
            raise ValueMismatch(f"'{name}' {exc}") from None
    return fitted
