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


def decode_token(token: str) -> dict[str, Any]:
    if not token:
        return {}
    try:
        value = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, UnicodeDecodeError):
        raise InvalidArgument.field("page_token", "malformed page token") from None
    if not isinstance(value, dict):
        raise InvalidArgument.field("page_token", "malformed page token")
    return value
