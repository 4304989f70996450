"""google.api.http path templates: parsing, matching and percent-decoding.

Grammar (google/api/http.proto)::

    Template = "/" Segments [ Verb ] ;
    Segments = Segment { "/" Segment } ;
    Segment  = "*" | "**" | LITERAL | Variable ;
    Variable = "{" FieldPath [ "=" Segments ] "}" ;
    Verb     = ":" LITERAL ;

A match is ranked segment by segment (literal > ``*`` > ``**``), which is what
Envoy's trie with backtracking finds; the router breaks ties by declaration.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

# RFC 6570 reserved characters: multi-segment variables keep them escaped, as
# grpc-gateway's UnescapingModeAllExceptReserved and Envoy's default do.
_RESERVED = frozenset(":/?#[]@!$&'()*+,;=")
_HEX = frozenset("0123456789abcdefABCDEF")


class TemplateError(ValueError):
    """A google.api.http path template that does not follow the grammar."""


class PathDecodeError(ValueError):
    """A request path with a malformed percent-escape or invalid UTF-8."""


class SegmentKind(enum.IntEnum):
    """Kinds of template segments; the value is the match rank."""

    DEEP = 0  # "**": zero or more segments
    WILD = 1  # "*": exactly one segment
    LITERAL = 2


@dataclass(frozen=True)
class Segment:
    """One template segment."""

    kind: SegmentKind
    literal: str = ""


@dataclass(frozen=True)
class Variable:
    """A ``{field.path=...}`` capture covering segments [start, end)."""

    field_path: tuple[str, ...]
    start: int
    end: int  # exclusive; for a variable ending in "**" it is len(segments)
    pattern: str  # the source of the variable's segments, e.g. "shelves/*"

    @property
    def single_segment(self) -> bool:
        return self.end - self.start == 1


@dataclass(frozen=True)
class PathTemplate:
    """A parsed template; ``match`` takes raw (still percent-encoded) segments."""

    source: str
    segments: tuple[Segment, ...]
    variables: tuple[Variable, ...]
    verb: str

    @property
    def has_deep(self) -> bool:
        return bool(self.segments) and self.segments[-1].kind is SegmentKind.DEEP

    def match(self, raw: Sequence[str]) -> tuple[tuple[int, ...], dict[str, str]] | None:
        """Returns (rank, {field path: value}) or None.

        Raises PathDecodeError when a segment has a bad escape.
        """
        n = len(self.segments)
        if self.has_deep:
            if len(raw) < n - 1:
                return None
        elif len(raw) != n:
            return None
        rank: list[int] = []
        for seg, text in zip(self.segments, raw, strict=False):
            if seg.kind is SegmentKind.DEEP:
                break
            # An empty segment matches "*" (grpc-gateway routes "/v1/x/" to
            # "/v1/x/{id}" with id=""), never a literal.
            if (
                seg.kind is SegmentKind.LITERAL
                and text != seg.literal
                and ("%" not in text or percent_decode(text) != seg.literal)
            ):
                return None
            rank.append(int(seg.kind))
        if self.has_deep:
            rank.extend([int(SegmentKind.DEEP)] * (len(raw) - (n - 1)))
        # Last key: a template without "**" beats one whose "**" matched
        # nothing ("/v3/files" over "/v3/files/{p=**}", grpc-gateway #5771).
        rank.append(0 if self.has_deep else 1)
        values: dict[str, str] = {}
        for var in self.variables:
            covers_deep = self.has_deep and var.end == n
            name = ".".join(var.field_path)
            if var.single_segment and not covers_deep:
                values[name] = percent_decode(raw[var.start])
            else:
                end = len(raw) if covers_deep else var.end
                values[name] = percent_decode("/".join(raw[var.start : end]), keep_reserved=True)
        return tuple(rank), values


def parse_template(source: str) -> PathTemplate:
    """Parses a template; raises TemplateError with the reason."""
    if not source.startswith("/"):
        raise TemplateError(f"template {source!r} must start with '/'")
    body, verb = _split_verb(source)
    segments: list[Segment] = []
    variables: list[Variable] = []
    for token in _split_top_level(body[1:], source):
        if token.startswith("{"):
            if not token.endswith("}"):
                raise TemplateError(f"template {source!r}: unterminated variable {token!r}")
            inner = token[1:-1]
            name, _, pattern = inner.partition("=")
            field_path = tuple(name.split("."))
            if not all(part.isidentifier() for part in field_path):
                raise TemplateError(f"template {source!r}: bad field path {name!r}")
            pattern = pattern or "*"
            sub = [_parse_plain(part, source) for part in pattern.split("/")]
            start = len(segments)
            segments.extend(sub)
            variables.append(Variable(field_path, start, len(segments), pattern))
        else:
            segments.append(_parse_plain(token, source))
    for i, seg in enumerate(segments):
        if seg.kind is SegmentKind.DEEP and i != len(segments) - 1:
            raise TemplateError(f"template {source!r}: '**' must be the last segment")
    names = [v.field_path for v in variables]
    if len(set(names)) != len(names):
        raise TemplateError(f"template {source!r}: a field is bound twice")
    return PathTemplate(source, tuple(segments), tuple(variables), verb)


def _split_verb(source: str) -> tuple[str, str]:
    depth = 0
    for i, char in enumerate(source):
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
        elif char == ":" and depth == 0:
            verb = source[i + 1 :]
            if not verb or any(c in "/{}*:" for c in verb):
                raise TemplateError(f"template {source!r}: bad verb {verb!r}")
            return source[:i], verb
    return source, ""


def _split_top_level(body: str, source: str) -> list[str]:
    """Splits on '/' outside braces."""
    tokens: list[str] = []
    depth = 0
    current: list[str] = []
    for char in body:
        if char == "{":
            if depth:
                raise TemplateError(f"template {source!r}: nested variables")
            depth = 1
        elif char == "}":
            if not depth:
                raise TemplateError(f"template {source!r}: unbalanced '}}'")
            depth = 0
        if char == "/" and not depth:
            tokens.append("".join(current))
            current = []
        else:
            current.append(char)
    if depth:
        raise TemplateError(f"template {source!r}: unterminated variable")
    tokens.append("".join(current))
    return tokens


def _parse_plain(text: str, source: str) -> Segment:
    if text == "*":
        return Segment(SegmentKind.WILD)
    if text == "**":
        return Segment(SegmentKind.DEEP)
    if not text:
        raise TemplateError(f"template {source!r}: empty segment (templates cannot end in '/')")
    if any(c in "{}*:" for c in text):
        raise TemplateError(f"template {source!r}: bad literal {text!r}")
    return Segment(SegmentKind.LITERAL, text)


def split_path(raw_path: str, verbs: frozenset[str]) -> list[tuple[list[str], str]]:
    """The ways to read a raw path: with a registered ``:verb`` stripped first.

    grpc-gateway strips a trailing ``:verb`` only for templates with that verb;
    any other ``:`` is part of the segment.
    """
    segments = raw_path[1:].split("/") if raw_path.startswith("/") else raw_path.split("/")
    readings: list[tuple[list[str], str]] = []
    last = segments[-1]
    head, sep, verb = last.rpartition(":")
    if sep and verb in verbs:
        readings.append(([*segments[:-1], head], verb))
    readings.append((segments, ""))
    return readings


def percent_decode(text: str, *, keep_reserved: bool = False) -> str:
    """Strict percent-decoding; with keep_reserved, reserved escapes stay as-is."""
    if "%" not in text:
        return text
    out = bytearray()
    i = 0
    raw = text.encode("utf-8")
    while i < len(raw):
        byte = raw[i]
        if byte != 0x25:  # '%'
            out.append(byte)
            i += 1
            continue
        pair = raw[i + 1 : i + 3].decode("ascii", errors="replace")
        if len(pair) != 2 or not set(pair) <= _HEX:
            raise PathDecodeError(f"malformed percent-escape in path segment {text!r}")
        value = int(pair, 16)
        if keep_reserved and chr(value) in _RESERVED:
            out.extend(raw[i : i + 3])
        else:
            out.append(value)
        i += 3
    try:
        return out.decode("utf-8")
    except UnicodeDecodeError:
        raise PathDecodeError(f"path segment {text!r} is not UTF-8") from None
