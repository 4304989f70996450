"""A small, safe expression language for filter and derive nodes. Never `eval`.

Grammar (precedence low to high)::

    expr    := or
    or      := and ("or" and)*
    and     := not ("and" not)*
    not     := "not" not | cmp
    cmp     := sum [("==" | "!=" | "<" | "<=" | ">" | ">=" | "in" | "not" "in") sum]
    sum     := product (("+" | "-") product)*
    product := unary (("*" | "/" | "%") unary)*
    unary   := "-" unary | primary
    primary := NUMBER | STRING | "true" | "false" | "null"
             | "[" [expr ("," expr)*] "]"
             | NAME "(" [expr ("," expr)*] ")"       -- a whitelisted function
             | field ("." NAME)*                     -- a field of the record
             | "(" expr ")"
    field   := NAME | "`" any text but "`" "`"

Text is parsed once into closures; evaluation touches only the record it is
given and the functions listed in FUNCTIONS, so an expression cannot reach
Python objects, attributes, the file system or the network. Sizes are bounded
(MAX_LENGTH characters, MAX_DEPTH nesting) so parsing cannot exhaust the stack.

Values are JSON values. A missing field is null; null propagates through
arithmetic and functions (except coalesce / is_null / if); an ordering
comparison with null is null, which a filter treats as false. Mixing types
(e.g. "a" < 1, true + 1) is an error, not a guess.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from kaireon_server.flow.expression_functions import (
    FUNCTIONS,
    LAZY_FUNCTIONS,
    ExpressionError,
    arith_values,
    contains_values,
    equal_values,
    order_values,
    truthy,
)

__all__ = ["Expression", "ExpressionError", "compile_expression"]

MAX_LENGTH = 4096
MAX_DEPTH = 48

Evaluator = Callable[[Mapping[str, Any]], Any]


_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<number>\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
  | (?P<string>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
  | (?P<quoted>`[^`]+`)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>==|!=|<=|>=|<|>|\+|-|\*|/|%|\(|\)|\[|\]|,|\.)
    """,
    re.VERBOSE,
)
_KEYWORDS = {"and", "or", "not", "in", "true", "false", "null"}
_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\", "'": "'", '"': '"'}


@dataclass(frozen=True)
class _Token:
    kind: str  # number, string, name, keyword, op, end
    text: str
    value: Any
    position: int


def _unescape(body: str, position: int) -> str:
    out, i = [], 0
    while i < len(body):
        ch = body[i]
        if ch == "\\":
            nxt = body[i + 1]
            if nxt not in _ESCAPES:
                raise ExpressionError("unknown escape sequence", position + i)
            out.append(_ESCAPES[nxt])
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise ExpressionError("unexpected character", pos)
        kind = match.lastgroup or ""
        raw = match.group()
        if kind == "number":
            is_int = "." not in raw and "e" not in raw.lower()
            tokens.append(_Token("number", raw, int(raw) if is_int else float(raw), pos))
        elif kind == "string":
            tokens.append(_Token("string", raw, _unescape(raw[1:-1], pos + 1), pos))
        elif kind == "quoted":
            tokens.append(_Token("field", raw, raw[1:-1], pos))
        elif kind == "name":
            tokens.append(_Token("keyword" if raw in _KEYWORDS else "name", raw, raw, pos))
        elif kind == "op":
            tokens.append(_Token("op", raw, raw, pos))
        pos = match.end()
    tokens.append(_Token("end", "", None, len(text)))
    return tokens


# --- parser ------------------------------------------------------------------------


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokenize(text)
        self.i = 0
        self.depth = 0
        self.fields: set[str] = set()

    @property
    def tok(self) -> _Token:
        return self.tokens[self.i]

    def take(self) -> _Token:
        token = self.tokens[self.i]
        self.i += 1
        return token

    def accept(self, kind: str, text: str) -> bool:
        if self.tok.kind == kind and self.tok.text == text:
            self.i += 1
            return True
        return False

    def expect(self, kind: str, text: str) -> None:
        if not self.accept(kind, text):
            raise ExpressionError(f"expected '{text}'", self.tok.position)

    def nest(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ExpressionError("expression nested too deeply", self.tok.position)

    def parse(self) -> Evaluator:
        node = self.expr()
        if self.tok.kind != "end":
            raise ExpressionError("unexpected token", self.tok.position)
        return node

    def expr(self) -> Evaluator:
        self.nest()
        try:
            return self.or_()
        finally:
            self.depth -= 1

    def or_(self) -> Evaluator:
        left = self.and_()
        while self.accept("keyword", "or"):
            right = self.and_()
            left = _or(left, right)
        return left

    def and_(self) -> Evaluator:
        left = self.not_()
        while self.accept("keyword", "and"):
            right = self.not_()
            left = _and(left, right)
        return left

    def not_(self) -> Evaluator:
        if self.accept("keyword", "not"):
            self.nest()
            inner = self.not_()
            self.depth -= 1
            return lambda r: not truthy(inner(r))
        return self.cmp()

    def cmp(self) -> Evaluator:
        left = self.sum()
        tok = self.tok
        if tok.kind == "op" and tok.text in ("==", "!=", "<", "<=", ">", ">="):
            self.take()
            right = self.sum()
            op = tok.text
            if op == "==":
                return lambda r: equal_values(left(r), right(r))
            if op == "!=":
                return lambda r: not equal_values(left(r), right(r))
            return lambda r: order_values(op, left(r), right(r))
        if self.accept("keyword", "in"):
            right = self.sum()
            return lambda r: contains_values(left(r), right(r))
        if tok.kind == "keyword" and tok.text == "not" and self.tokens[self.i + 1].text == "in":
            self.i += 2
            right = self.sum()

            def not_in(r: Mapping[str, Any]) -> Any:
                found = contains_values(left(r), right(r))
                return None if found is None else not found

            return not_in
        return left

    def sum(self) -> Evaluator:
        left = self.product()
        while self.tok.kind == "op" and self.tok.text in ("+", "-"):
            op = self.take().text
            right = self.product()
            left = _binary(op, left, right)
        return left

    def product(self) -> Evaluator:
        left = self.unary()
        while self.tok.kind == "op" and self.tok.text in ("*", "/", "%"):
            op = self.take().text
            right = self.unary()
            left = _binary(op, left, right)
        return left

    def unary(self) -> Evaluator:
        if self.accept("op", "-"):
            self.nest()
            inner = self.unary()
            self.depth -= 1
            return lambda r: arith_values("-", 0, inner(r))
        return self.primary()

    def arguments(self) -> list[Evaluator]:
        args: list[Evaluator] = []
        closing = ")" if self.tokens[self.i - 1].text == "(" else "]"
        if self.accept("op", closing):
            return args
        while True:
            args.append(self.expr())
            if self.accept("op", closing):
                return args
            self.expect("op", ",")

    def primary(self) -> Evaluator:
        tok = self.take()
        if tok.kind in ("number", "string"):
            value = tok.value
            return lambda r: value
        if tok.kind == "keyword" and tok.text in ("true", "false", "null"):
            constant = {"true": True, "false": False, "null": None}[tok.text]
            return lambda r: constant
        if tok.kind == "op" and tok.text == "(":
            inner = self.expr()
            self.expect("op", ")")
            return inner
        if tok.kind == "op" and tok.text == "[":
            items = self.arguments()
            return lambda r: [item(r) for item in items]
        if tok.kind == "name" and self.tok.kind == "op" and self.tok.text == "(":
            self.take()
            return self.call(tok)
        if tok.kind in ("name", "field"):
            path = [str(tok.value)]
            while self.accept("op", "."):
                part = self.take()
                if part.kind not in ("name", "field", "keyword"):
                    raise ExpressionError("expected a field name after '.'", part.position)
                path.append(str(part.value))
            self.fields.add(path[0])
            return _field(tuple(path))
        raise ExpressionError("unexpected token", tok.position)

    def call(self, name: _Token) -> Evaluator:
        args = self.arguments()
        if name.text in LAZY_FUNCTIONS:
            if len(args) != LAZY_FUNCTIONS[name.text]:
                raise ExpressionError(f"{name.text}() takes 3 arguments", name.position)
            cond, then, other = args
            return lambda r: then(r) if truthy(cond(r)) else other(r)
        spec = FUNCTIONS.get(name.text)
        if spec is None:
            raise ExpressionError(f"unknown function '{name.text}'", name.position)
        fn, lo, hi = spec
        if len(args) < lo or (hi is not None and len(args) > hi):
            raise ExpressionError(f"wrong number of arguments to {name.text}()", name.position)
        return lambda r: fn(*[a(r) for a in args])


def _or(a: Evaluator, b: Evaluator) -> Evaluator:
    return lambda r: truthy(a(r)) or truthy(b(r))


def _and(a: Evaluator, b: Evaluator) -> Evaluator:
    return lambda r: truthy(a(r)) and truthy(b(r))


def _binary(op: str, a: Evaluator, b: Evaluator) -> Evaluator:
    return lambda r: arith_values(op, a(r), b(r))


def _field(path: tuple[str, ...]) -> Evaluator:
    def get(record: Mapping[str, Any]) -> Any:
        value: Any = record
        for part in path:
            if not isinstance(value, Mapping):
                return None
            value = value.get(part)
        return value

    return get


@dataclass(frozen=True)
class Expression:
    """A parsed expression: evaluate it against one record (a JSON object)."""

    text: str
    fields: frozenset[str]
    _evaluate: Evaluator

    def evaluate(self, record: Mapping[str, Any]) -> Any:
        try:
            return self._evaluate(record)
        except RecursionError:
            raise ExpressionError("expression too deep to evaluate") from None

    def test(self, record: Mapping[str, Any]) -> bool:
        """Evaluate as a condition: true keeps the record; false and null drop it."""
        return truthy(self.evaluate(record))


def compile_expression(text: str) -> Expression:
    """Parse `text`; raises ExpressionError naming the position of the first problem."""
    if not text.strip():
        raise ExpressionError("expression is empty")
    if len(text) > MAX_LENGTH:
        raise ExpressionError(f"expression longer than {MAX_LENGTH} characters")
    parser = _Parser(text)
    evaluator = parser.parse()
    return Expression(text, frozenset(parser.fields), evaluator)
