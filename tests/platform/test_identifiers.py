"""One validating identifier-quoting function (platform/db/identifiers.py), used everywhere."""

from __future__ import annotations

import ast

import pytest

from kaireon_server.platform.db.identifiers import (
    CATALOGUE_NAME,
    DYNAMIC_TABLE,
    LOWER_IDENTIFIER,
    InvalidIdentifier,
    quote_ident,
)
from kaireon_server.platform.errors import FailedPrecondition
from tests.support.server import ROOT

PACKAGE = ROOT / "server" / "kaireon_server"
HOME = "platform/db/identifiers.py"

HOSTILE = [
    "",
    'ds_x"; DROP TABLE audit_log; --',
    'a"b',
    "a\x00b",
    "ds_loyalty\n",
    "name\n",
    "\nname",
    "a b",
    "a;b",
    "a.b",
    "1abc",
    "x" * 64,
    "é" * 32,  # 64 bytes
    "tab\tle",
    "ds_\u200bx",
]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidIdentifier) as caught:
        quote_ident(name)
    # A typed error the interceptor maps (FAILED_PRECONDITION), naming no value.
    assert isinstance(caught.value, FailedPrecondition)
    assert caught.value.reason == "INVALID_IDENTIFIER"
    if name:
        assert name not in str(caught.value)


def test_non_strings_are_refused() -> None:
    for value in (None, 1, b"abc"):
        with pytest.raises(InvalidIdentifier):
            quote_ident(value)  # type: ignore[arg-type]


def test_a_permissive_pattern_still_refuses_control_characters_and_length() -> None:
    import re

    anything = re.compile(r".*", re.DOTALL)
    for name in ("a\x00b", "a\nb", "ab\n", "a\rb", "x" * 64, ""):
        with pytest.raises(InvalidIdentifier):
            quote_ident(name, pattern=anything)


def test_catalogue_names_keep_their_quotes_doubled() -> None:
    """DSAR exports every column of a table, whatever the column is called."""
    assert quote_ident('weird "name"', pattern=CATALOGUE_NAME) == '"weird ""name"""'
    assert quote_ident("First Name", pattern=CATALOGUE_NAME) == '"First Name"'
    for name in ("a\x00b", "tail\n", "x" * 64, ""):
        with pytest.raises(InvalidIdentifier):
            quote_ident(name, pattern=CATALOGUE_NAME)


def test_plain_names_are_quoted() -> None:
    assert quote_ident("interaction_history") == '"interaction_history"'
    assert quote_ident("CustomerName") == '"CustomerName"'
    assert quote_ident("select") == '"select"'  # a keyword is a fine quoted name
    assert quote_ident("x" * 63) == '"' + "x" * 63 + '"'
    assert quote_ident("ds_demo_loyalty", pattern=DYNAMIC_TABLE) == '"ds_demo_loyalty"'


def test_patterns_narrow_what_is_accepted() -> None:
    with pytest.raises(InvalidIdentifier):
        quote_ident("CustomerName", pattern=LOWER_IDENTIFIER)
    for name in ("interaction_history", "ds_", "ds_UPPER", "dsx_a", "ds_" + "a" * 60):
        with pytest.raises(InvalidIdentifier):
            quote_ident(name, pattern=DYNAMIC_TABLE)
    # `.match` on the pattern is a whole-string match too (used by config checks).
    assert DYNAMIC_TABLE.match("ds_a\n") is None
    assert DYNAMIC_TABLE.match("ds_a") is not None


def _is_quote(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and node.value in ('"', '""')


def _offences(tree: ast.AST) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and "quot" in node.name.lower():
            found.append((node.lineno, f"defines {node.name}()"))
        # '"' + name + '"'
        if (
            isinstance(node, ast.BinOp)
            and isinstance(node.op, ast.Add)
            and (_is_quote(node.left) or _is_quote(node.right))
        ):
            found.append((node.lineno, "concatenates a double quote"))
        # name.replace('"', '""')
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "replace"
            and node.args
            and _is_quote(node.args[0])
        ):
            found.append((node.lineno, "doubles double quotes"))
        # f'"{name}"': a double quote right before and right after a placeholder.
        if isinstance(node, ast.JoinedStr):
            parts = node.values
            for i, part in enumerate(parts):
                if not isinstance(part, ast.FormattedValue) or i == 0 or i + 1 >= len(parts):
                    continue
                before, after = parts[i - 1], parts[i + 1]
                if (
                    isinstance(before, ast.Constant)
                    and isinstance(after, ast.Constant)
                    and str(before.value).endswith('"')
                    and str(after.value).startswith('"')
                ):
                    found.append((node.lineno, "splices an identifier in double quotes"))
    return found


def test_no_module_quotes_identifiers_by_itself() -> None:
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel == HOME:
            continue
        offenders += [
            f"{rel}:{line}: {what}" for line, what in _offences(ast.parse(path.read_text()))
        ]
    assert offenders == []


def test_the_detector_finds_each_way_of_quoting() -> None:
    sample = """
def _quote(name):
    return '"' + name.replace('"', '""') + '"'
def build(table):
    return f'SELECT * FROM "{table}"'
"""
    kinds = {what for _, what in _offences(ast.parse(sample))}
    assert kinds == {
        "defines _quote()",
        "concatenates a double quote",
        "doubles double quotes",
        "splices an identifier in double quotes",
    }
