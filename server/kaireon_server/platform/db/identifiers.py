"""The one way to put a table or column name into SQL text: `quote_ident`.

asyncpg binds values, never identifiers, so a name (from the data map, the
schema registry or the catalogue) has to be spliced into the statement. It is
checked first, then double-quoted: a name outside the pattern is refused with
`InvalidIdentifier`, never escaped into something that happens to parse.
A test (tests/platform/test_identifiers.py) fails if another module defines
its own quoting helper or splices `"{name}"` itself.
"""

from __future__ import annotations

import re

from kaireon_server.platform.errors import FailedPrecondition

# PostgreSQL truncates names past NAMEDATALEN - 1 bytes; a truncated name is another name.
MAX_IDENTIFIER_BYTES = 63

# Plain ASCII identifiers, either case (quoting keeps the case the catalogue has).
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*", re.ASCII)
# Lower-case only: what the data map holds.
LOWER_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]*", re.ASCII)
# A dynamic customer table: the schema registry's CHECK (migration 0001). `\Z`
# so that `.match` is a whole-string match too (a trailing newline is refused).
DYNAMIC_TABLE = re.compile(r"ds_[a-z0-9_]{1,59}\Z", re.ASCII)
# A column name read back from the catalogue (pg_attribute), so one that exists
# exactly as written: any printable text, quotes included (doubled when quoted).
# Only the DSAR export uses it: it must export every column of a customer's
# table, whatever the column is called (a CSV import's "First Name").
CATALOGUE_NAME = re.compile(r"[^\x00-\x1f\x7f]+")


class InvalidIdentifier(FailedPrecondition, ValueError):
    """A name that may not be used as an SQL identifier. The name itself is not in
    the message (it may come from anywhere); the caller knows which one it passed."""

    def __init__(self, why: str) -> None:
        super().__init__(f"not a valid SQL identifier: {why}", reason="INVALID_IDENTIFIER")


def check_ident(name: object, *, pattern: re.Pattern[str] = IDENTIFIER) -> str:
    """`name` if it is a usable identifier that fully matches `pattern`; else InvalidIdentifier."""
    if not isinstance(name, str):
        raise InvalidIdentifier("not a string")
    if not name:
        raise InvalidIdentifier("empty")
    if len(name.encode("utf-8", "surrogatepass")) > MAX_IDENTIFIER_BYTES:
        raise InvalidIdentifier(f"longer than {MAX_IDENTIFIER_BYTES} bytes")
    # Whatever pattern a caller passes, control characters (NUL, newline) never
    # reach SQL text; quotes only where the pattern admits them (CATALOGUE_NAME).
    if not name.isprintable():
        raise InvalidIdentifier("contains a control character")
    if pattern.fullmatch(name) is None:
        raise InvalidIdentifier("outside the allowed pattern")
    return name


def quote_ident(name: str, *, pattern: re.Pattern[str] = IDENTIFIER) -> str:
    """`"name"`, after `check_ident`; an admitted quote is doubled (PostgreSQL's rule)."""
    return '"' + check_ident(name, pattern=pattern).replace('"', '""') + '"'
