"""Collects every log line the suite produces (in-process and subprocess servers)
and finds personal data or key material in them."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from pathlib import Path

from kaireon_server.platform.logging_setup import JsonFormatter

# What the demo seed plants (server/kaireon_server/demo/seed.py): customer ids,
# emails, phone numbers and street addresses.
PII_PATTERNS = {
    "customer id": re.compile(r"cust_\d{5}"),
    "email": re.compile(r"[a-z]+\.[a-z]+\d+@example\.com"),
    "phone": re.compile(r"\+33 6 \d\d \d\d \d\d \d\d"),
    "address": re.compile(r"\d+ (Rue de Rivoli|Via Roma|Hauptstrasse|Calle Mayor|Kungsgatan)"),
}


class CollectingHandler(logging.Handler):
    """Formats records exactly as production does (JSON with extras) and keeps them."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.setFormatter(JsonFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(self.format(record))
        except Exception:  # a record that cannot be formatted is not evidence
            self.lines.append(record.getMessage())


def secret_fragments(key_files: Iterable[Path], secrets: Iterable[str]) -> list[str]:
    """Distinctive pieces of key material: PEM body lines and configured secrets."""
    fragments = [s for s in secrets if len(s) >= 16]
    for path in key_files:
        if path.exists():
            fragments += [
                line
                for line in path.read_text().splitlines()
                if line and not line.startswith("-----")
            ]
    return fragments


def findings(lines: Iterable[str], fragments: Iterable[str]) -> list[str]:
    fragments = list(fragments)
    found = []
    for line in lines:
        for name, pattern in PII_PATTERNS.items():
            if pattern.search(line):
                found.append(f"{name}: {line[:300]}")
        for fragment in fragments:
            if fragment in line:
                found.append(f"key material: {line[:120]}…")
    return found
