"""Opaque page tokens and page-size validation shared by every List RPC."""

from __future__ import annotations

import base64
import json
from typing import Any

from kaireon_server.platform.errors import InvalidArgument


def clamp_page_size(requested: int, *, default: int, maximum: int) -> int:
    if requested < 0:
        raise InvalidArgument.field("page_size", "must not be negative")
    if requested == 0:
        return default
    return min(requested, maximum)


def encode_token(position: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(position, separators=(",", ":")).encode()).decode()


INT64_MAX = 2**63 - 1


def _position_value(value: Any) -> bool:
    """What encode_token ever writes: text a query can bind, or a bigint."""
    if isinstance(value, str):
        return "\x00" not in value and len(value) <= 1024
    return (
        isinstance(value, int) and not isinstance(value, bool) and -INT64_MAX <= value <= INT64_MAX
    )


def decode_token(token: str) -> dict[str, Any]:
    """The position a page token holds. Tokens are caller input: anything but what
    encode_token writes (a flat object of strings and bigints) is malformed."""
    if not token:
        return {}
    try:
        value = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise InvalidArgument.field("page_token", "malformed page token") from None
    if not isinstance(value, dict) or not all(_position_value(v) for v in value.values()):
        raise InvalidArgument.field("page_token", "malformed page token")
    return value
