"""Transform nodes over records: filter, rename, cast, derive, dedupe, join (mask: mask.py).

Every single-input transform reads the dependency named by its `input` option,
or its only dependency. Records pass through as new dicts; inputs are never
mutated, because the same output may feed several nodes.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kaireon_server.flow.expressions import Expression, ExpressionError, compile_expression
from kaireon_server.flow.nodes.base import (
    Config,
    ConfigError,
    NodeContext,
    NodeError,
    NodeSetup,
    NodeType,
    Records,
    input_option,
    records_of,
)
from kaireon_server.flow.nodes.mask import MaskTransform
from kaireon_server.platform.canonical import canonical_json


def _expression(path: str, text: Any) -> Expression:
    if not isinstance(text, str):
        raise ConfigError(path, "must be an expression string")
    try:
        return compile_expression(text)
    except ExpressionError as exc:
        raise ConfigError(path, str(exc)) from None


def _eval_error(node: str, exc: ExpressionError) -> NodeError:
    return NodeError(f"{node}: {exc}")


@dataclass(frozen=True)
class FilterConfig:
    input: str
    where: Expression


class Filter(NodeType[FilterConfig]):
    """`transform.filter`: {where: expression, input?} — keeps records where it is true."""

    name = "transform.filter"

    def parse_config(self, config: Mapping[str, Any], setup: NodeSetup) -> FilterConfig:
        cfg = Config(config, {"where", "input"})
        return FilterConfig(input_option(cfg, setup), _expression("where", cfg.value("where")))

    async def run(self, ctx: NodeContext, config: FilterConfig, inputs: Mapping[str, Any]) -> Any:
        try:
            return [dict(r) for r in records_of(inputs, config.input) if config.where.test(r)]
        except ExpressionError as exc:
            raise _eval_error("where", exc) from None


@dataclass(frozen=True)
class RenameConfig:
    input: str
    fields: Mapping[str, str]


class Rename(NodeType[RenameConfig]):
    """`transform.rename`: {fields: {old: new}, input?}."""

    name = "transform.rename"

    def parse_config(self, config: Mapping[str, Any], setup: NodeSetup) -> RenameConfig:
        cfg = Config(config, {"fields", "input"})
        fields = cfg.text_map("fields")
        if len(set(fields.values())) != len(fields):
            raise ConfigError("fields", "two fields are renamed to the same name")
        return RenameConfig(input_option(cfg, setup), fields)

    async def run(self, ctx: NodeContext, config: RenameConfig, inputs: Mapping[str, Any]) -> Any:
        mapping = config.fields
        return [
            {mapping.get(k, k): v for k, v in r.items()} for r in records_of(inputs, config.input)
        ]


CAST_TYPES = ("string", "integer", "number", "boolean", "timestamp", "date")
_TRUE = {"true", "t", "yes", "y", "1"}
_FALSE = {"false", "f", "no", "n", "0"}


def _cast(value: Any, target: str) -> Any:
    if value is None:
        return None
    if target == "string":
        if isinstance(value, bool):
            return "true" if value else "false"
        return value if isinstance(value, str) else canonical_json(value).decode()
    if target == "integer":
        if isinstance(value, bool):
            raise ValueError
        number = float(value) if isinstance(value, str) else value
        if not isinstance(number, int | float) or number != int(number):
            raise ValueError
        return int(number)
    if target == "number":
        if isinstance(value, bool):
            raise ValueError
        number = float(value)
        return int(number) if number.is_integer() and not isinstance(value, float) else number
    if target == "boolean":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ValueError
    if not isinstance(value, str):
        raise ValueError
    if target == "date":
        return dt.date.fromisoformat(value[:10]).isoformat()
    moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class CastConfig:
    input: str
    fields: Mapping[str, str]
    on_error: str


class Cast(NodeType[CastConfig]):
    """`transform.cast`: {fields: {name: type}, on_error?: "fail" | "null", input?}.

    Types: string, integer, number, boolean, timestamp (RFC 3339, normalised to
    UTC "Z"), date (YYYY-MM-DD).
    """

    name = "transform.cast"

    def parse_config(self, config: Mapping[str, Any], setup: NodeSetup) -> CastConfig:
        cfg = Config(config, {"fields", "on_error", "input"})
        fields = cfg.text_map("fields")
        for name, target in fields.items():
            if target not in CAST_TYPES:
                raise ConfigError(f"fields.{name}", f"must be one of {', '.join(CAST_TYPES)}")
        on_error = cfg.text("on_error", "fail", choices=("fail", "null"))
        return CastConfig(input_option(cfg, setup), fields, on_error)

    async def run(self, ctx: NodeContext, config: CastConfig, inputs: Mapping[str, Any]) -> Any:
        out: Records = []
        for index, record in enumerate(records_of(inputs, config.input)):
            row = dict(record)
            for name, target in config.fields.items():
                if name not in row:
                    continue
                try:
                    row[name] = _cast(row[name], target)
                except (TypeError, ValueError, OverflowError):
                    if config.on_error == "null":
                        row[name] = None
                    else:
                        # Position and field only: the value may be personal data.
                        raise NodeError(
                            f"record {index}: field '{name}' cannot be cast to {target}"
                        ) from None
            out.append(row)
        return out


@dataclass(frozen=True)
class DeriveConfig:
    input: str
    fields: Mapping[str, Expression]


class Derive(NodeType[DeriveConfig]):
    """`transform.derive`: {fields: {name: expression}, input?}.

    Every expression sees the input record (not fields derived beside it), so
    the result does not depend on the order of `fields`.
    """

    name = "transform.derive"

    def parse_config(self, config: Mapping[str, Any], setup: NodeSetup) -> DeriveConfig:
        cfg = Config(config, {"fields", "input"})
        raw = cfg.text_map("fields")
        fields = {name: _expression(f"fields.{name}", text) for name, text in raw.items()}
        return DeriveConfig(input_option(cfg, setup), fields)

    async def run(self, ctx: NodeContext, config: DeriveConfig, inputs: Mapping[str, Any]) -> Any:
        out: Records = []
        for record in records_of(inputs, config.input):
            row = dict(record)
            for name, expression in config.fields.items():
                try:
                    row[name] = expression.evaluate(record)
                except ExpressionError as exc:
                    raise _eval_error(f"fields.{name}", exc) from None
            out.append(row)
        return out


def _key(record: Mapping[str, Any], fields: tuple[str, ...]) -> bytes:
    # Canonical JSON makes 1 and 1.0 one key and dict/list values hashable.
    return canonical_json([record.get(f) for f in fields])


@dataclass(frozen=True)
class DedupeConfig:
    input: str
    keys: tuple[str, ...]
    keep: str


class Dedupe(NodeType[DedupeConfig]):
    """`transform.dedupe`: {keys: [field, ...], keep?: "first" | "last", input?}.

    Keeps one record per distinct key, in the order first seen.
    """

    name = "transform.dedupe"

    def parse_config(self, config: Mapping[str, Any], setup: NodeSetup) -> DedupeConfig:
        cfg = Config(config, {"keys", "keep", "input"})
        keys = tuple(cfg.text_list("keys"))
        keep = cfg.text("keep", "first", choices=("first", "last"))
        return DedupeConfig(input_option(cfg, setup), keys, keep)

    async def run(self, ctx: NodeContext, config: DedupeConfig, inputs: Mapping[str, Any]) -> Any:
        chosen: dict[bytes, dict[str, Any]] = {}
        for record in records_of(inputs, config.input):
            key = _key(record, config.keys)
            if config.keep == "last" or key not in chosen:
                chosen[key] = dict(record)
        return list(chosen.values())


@dataclass(frozen=True)
class JoinConfig:
    left: str
    right: str
    on: tuple[tuple[str, str], ...]
    how: str
    right_prefix: str


class Join(NodeType[JoinConfig]):
    """`transform.join`: {left, right, on: [{left, right}, ...], how?: "inner" | "left",
    right_prefix?}. A hash join; null keys never match (as in SQL). Right-side
    fields are added to the left record unless the left has the field already;
    set `right_prefix` to keep both."""

    name = "transform.join"

    def parse_config(self, config: Mapping[str, Any], setup: NodeSetup) -> JoinConfig:
        cfg = Config(config, {"left", "right", "on", "how", "right_prefix"})
        left, right = cfg.text("left"), cfg.text("right")
        for key, dep in (("left", left), ("right", right)):
            if dep not in setup.depends_on:
                raise ConfigError(key, "must name one of the node's dependencies")
        on_raw = cfg.value("on")
        if not isinstance(on_raw, list) or not on_raw:
            raise ConfigError("on", "must be a non-empty list of {left, right} field pairs")
        pairs = []
        for index, pair in enumerate(on_raw):
            if not isinstance(pair, Mapping):
                raise ConfigError(f"on[{index}]", "must be an object {left, right}")
            inner = Config(pair, {"left", "right"})
            try:
                pairs.append((inner.text("left"), inner.text("right")))
            except ConfigError as exc:
                raise ConfigError(f"on[{index}].{exc.path}", exc.message) from None
        how = cfg.text("how", "inner", choices=("inner", "left"))
        prefix = cfg.value("right_prefix", "")
        if not isinstance(prefix, str):
            raise ConfigError("right_prefix", "must be a string")
        return JoinConfig(left, right, tuple(pairs), how, prefix)

    async def run(self, ctx: NodeContext, config: JoinConfig, inputs: Mapping[str, Any]) -> Any:
        left_keys = tuple(p[0] for p in config.on)
        right_keys = tuple(p[1] for p in config.on)
        index: dict[bytes, list[dict[str, Any]]] = {}
        for record in records_of(inputs, config.right):
            if any(record.get(k) is None for k in right_keys):
                continue
            index.setdefault(_key(record, right_keys), []).append(record)
        out: Records = []
        for record in records_of(inputs, config.left):
            matches = (
                []
                if any(record.get(k) is None for k in left_keys)
                else index.get(_key(record, left_keys), [])
            )
            if not matches and config.how == "left":
                out.append(dict(record))
            for match in matches:
                row = dict(record)
                for name, value in match.items():
                    if name in right_keys and not config.right_prefix:
                        continue
                    row.setdefault(config.right_prefix + name, value)
                out.append(row)
        return out


NODE_TYPES: list[NodeType[Any]] = [
    Filter(),
    Rename(),
    Cast(),
    Derive(),
    Dedupe(),
    Join(),
    MaskTransform(),
]
