"""HTTP request -> request message, following grpc-gateway's binding rules.

Order: the body first, then path variables (the path overrides the body, as in
grpc-gateway), then query parameters into the fields neither of them bound.

Whatever the strict setting, a body is refused when it names one key twice
(also as a field's JSON and proto names) or holds a number no double can carry
(NaN, Infinity, 1e400): a proxy that validated the first of two duplicates,
or a handler that meets infinity, must never see a request the client did not
mean. Strict mode (the default) also refuses unknown fields and query
parameters, and query parameters the route does not read.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from typing import Any, cast

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from kaireon_server.gateway.errors import RequestError
from kaireon_server.gateway.fields import (
    FIELD_MASK,
    check_number_text,
    find_field,
    is_map,
    is_message,
    is_plain_message,
    join_path,
    key_part,
    message_of,
    number_field,
    real_oneof,
    resolve_path,
    text_to_json,
)
from kaireon_server.gateway.routes import Route

_MAP_KEY = re.compile(r"(?P<field>[^\[\]]+)\[(?P<key>[^\[\]]*)\]")


def build_request(
    route: Route,
    path_values: dict[str, str],
    query: Iterable[tuple[str, str]],
    body: bytes,
    content_type: str,
    *,
    strict: bool = True,
) -> Message:
    """The request message of one HTTP request; raises RequestError."""
    message = route.input_class()
    body_json: Any = None
    if route.body and route.raw_request_body:
        target: Any = message if route.body == "*" else getattr(message, route.body)
        target.content_type = content_type
        target.data = body
    elif route.body:
        body_json = parse_json_body(body)
        if body_json is not None:
            if route.body == "*":
                if not isinstance(body_json, dict):
                    raise RequestError("request body must be a JSON object")
                _parse_dict(body_json, message, strict)
            else:
                _parse_dict({route.body: body_json}, message, strict)
    # Path and query in one json_format pass; query_dict skips path-bound
    # keys, so they cannot clash. Parsed after the body: the path wins.
    fields = _path_dict(route, path_values) if path_values else {}
    if route.body != "*":
        _merge(fields, query_dict(route, query, strict=strict))
    elif strict:
        for key, _ in query:
            # body "*" takes the whole request from the body: a query parameter
            # (?dryRun=true) would be silently dropped.
            raise RequestError(
                f"query parameter {_shown(key)}: this route takes every field from the body"
            )
    if fields:
        _parse_dict(fields, message, strict=True, checked=True)
    if route.http_method == "PATCH" and isinstance(body_json, dict):
        _fill_update_mask(route, message, body_json)
    return message


def _shown(key: str) -> str:
    """A caller's key in an error message: quoted, cut to 64 characters."""
    return repr(key if len(key) <= 64 else key[:64] + "...")


class _DuplicateKey(ValueError):
    pass


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return result


def _beyond_double(value: int) -> bool:
    """Whether the integer has no double value (Struct numbers are doubles)."""
    try:
        float(value)
    except OverflowError:
        return True
    return False


def parse_json_body(body: bytes) -> Any:
    """The parsed body, None when empty; RequestError when it is not JSON.

    Refused as well: a key twice in one object, NaN/Infinity (not JSON, but
    Python's parser takes them), and numbers beyond a double (1e400) - each
    named by its path in the body.
    """
    if not body.strip():
        return None
    odd_numbers: list[bool] = []

    def number(text: str) -> float:
        value = float(text)
        if not math.isfinite(value):
            odd_numbers.append(True)
        return value

    def integer(text: str) -> int:
        value = int(text)
        if len(text) > 300 and _beyond_double(value):  # a double holds up to 309 digits
            odd_numbers.append(True)
        return value

    try:
        parsed = json.loads(
            body,
            object_pairs_hook=_unique_pairs,
            parse_float=number,
            parse_int=integer,
            parse_constant=number,
        )
    except _DuplicateKey as exc:
        raise RequestError(f"duplicate key {_shown(exc.args[0])} in the JSON body") from None
    except (ValueError, RecursionError) as exc:
        raise RequestError(f"invalid JSON body: {exc}") from None
    if odd_numbers:
        where = _find_odd_number(parsed, "")
        raise RequestError(f"{where or 'body'}: not a finite number within the range of a double")
    return parsed


def _find_odd_number(value: Any, where: str) -> str | None:
    """The path of the first non-finite or too large number."""
    if isinstance(value, float):
        return None if math.isfinite(value) else where
    if isinstance(value, int) and not isinstance(value, bool):
        return where if _beyond_double(value) else None
    if isinstance(value, dict):
        items: Iterable[tuple[str, Any]] = ((join_path(where, k), v) for k, v in value.items())
    elif isinstance(value, list):
        items = ((f"{where}[{i}]", v) for i, v in enumerate(value))
    else:
        return None
    for at, item in items:
        found = _find_odd_number(item, at)
        if found is not None:
            return found
    return None


def _parse_dict(
    value: dict[str, Any], message: Message, strict: bool, *, checked: bool = False
) -> None:
    if not checked:
        _check_objects(cast("Descriptor", message.DESCRIPTOR), value, "", strict)
    try:
        json_format.ParseDict(value, message, ignore_unknown_fields=not strict)
    except (json_format.ParseError, ValueError, TypeError, RecursionError, OverflowError) as exc:
        raise RequestError(str(exc)) from None


def _check_objects(desc: Descriptor, value: Any, where: str, strict: bool) -> None:
    """Rejects a non-object where a message goes, a field given twice, and
    (strict) an unknown field, naming its path.

    Python's json_format iterates whatever it gets, so "x" for a message
    field would silently become an empty message; and it takes {"dryRun":
    true, "dry_run": false} as dry_run=false.
    """
    if not isinstance(value, dict):
        raise RequestError(f"{where or desc.name}: expected a JSON object for {desc.full_name}")
    seen: dict[str, str] = {}
    for key, item in value.items():
        field = find_field(desc, key)
        at = join_path(where, key)
        if field is None:
            if strict:
                raise RequestError(f"{at}: unknown field {_shown(key)} of {desc.full_name}")
            continue
        other = seen.setdefault(field.name, key)
        if other != key:
            raise RequestError(
                f"{join_path(where, field.name)}: given twice, as {_shown(other)} and {_shown(key)}"
            )
        if item is None:
            continue
        if is_map(field):
            entry = message_of(field).fields_by_name["value"]
            numeric = number_field(entry)
            if numeric is not None and isinstance(item, dict):
                for map_key, map_item in item.items():
                    _check_number_string(numeric, map_item, f"{at}{key_part(map_key)}")
            if is_plain_message(entry) and isinstance(item, dict):
                for map_key, map_item in item.items():
                    _check_objects(message_of(entry), map_item, f"{at}{key_part(map_key)}", strict)
        elif is_plain_message(field):
            items = item if field.is_repeated and isinstance(item, list) else [item]
            for element in items:
                _check_objects(message_of(field), element, at, strict)
        elif (numeric := number_field(field)) is not None:
            items = item if field.is_repeated and isinstance(item, list) else [item]
            for i, element in enumerate(items):
                _check_number_string(numeric, element, f"{at}[{i}]" if items is item else at)


def _check_number_string(field: FieldDescriptor, value: Any, where: str) -> None:
    """A number sent as a JSON string must be spelt as in a query (fields.py)."""
    if isinstance(value, str):
        try:
            check_number_text(field, value)
        except ValueError:
            raise RequestError(f"{where}: {_shown(value)} is not a number") from None


def _path_dict(route: Route, path_values: dict[str, str]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for dotted, text in path_values.items():
        names = tuple(dotted.split("."))
        chain = resolve_path(route.input_type, names)
        if chain is None:  # routes.build_routes validated every variable
            raise RequestError(f"path variable {dotted} is not a field")
        try:
            _assign(result, names, text_to_json(chain[-1], text))
        except ValueError as exc:
            raise RequestError(f"path variable {dotted}: {exc}") from None
    return result


def query_dict(
    route: Route, query: Iterable[tuple[str, str]], *, strict: bool = True
) -> dict[str, Any]:
    """Query parameters as a proto3 JSON dict (proto names) of the unbound fields."""
    grouped: dict[tuple[str, ...], tuple[FieldDescriptor, list[str], str]] = {}
    map_values: dict[tuple[str, ...], dict[str, Any]] = {}
    bound = route.bound_paths
    for key, value in query:
        map_match = _MAP_KEY.fullmatch(key)
        dotted = map_match.group("field") if map_match else key
        chain = resolve_path(route.input_type, tuple(dotted.split(".")))
        if chain is None:
            if strict:
                raise RequestError(f"unknown query parameter {_shown(key)}")
            continue  # grpc-gateway ignores unknown keys
        path = tuple(field.name for field in chain)
        if any(path[: len(b)] == b for b in bound):
            if strict:  # the path or the body wins: the value would be dropped
                raise RequestError(f"query parameter {_shown(key)}: set by the path or the body")
            continue
        leaf = chain[-1]
        if is_map(leaf):
            if map_match is None:
                raise RequestError(f"query parameter {key!r}: use {dotted}[key]=value for a map")
            entries = map_values.setdefault(path, {})
            if map_match.group("key") in entries:
                raise RequestError(f"query parameter {key!r} given more than once")
            entries[map_match.group("key")] = _convert(
                message_of(leaf).fields_by_name["value"], value, key
            )
            continue
        if map_match is not None:
            raise RequestError(f"query parameter {key!r}: {dotted} is not a map")
        _, values, _ = grouped.setdefault(path, (leaf, [], key))
        values.append(value)
    result: dict[str, Any] = {}
    oneofs: dict[tuple[tuple[str, ...], str], str] = {}
    for path, (leaf, values, key) in grouped.items():
        if is_plain_message(leaf):
            raise RequestError(f"query parameter {key!r}: a message cannot be set from the query")
        oneof = real_oneof(leaf)
        if oneof is not None:
            other = oneofs.setdefault((path[:-1], oneof), leaf.name)
            if other != leaf.name:
                raise RequestError(f"query parameters set two members of oneof {oneof}")
        if leaf.is_repeated:
            _assign(result, path, [_convert(leaf, v, key) for v in values])
        elif len(values) > 1:
            raise RequestError(f"query parameter {key!r} given more than once")
        else:
            _assign(result, path, _convert(leaf, values[0], key))
    for path, entries in map_values.items():
        _assign(result, path, entries)
    return result


def _convert(field: FieldDescriptor, text: str, key: str) -> Any:
    try:
        return text_to_json(field, text)
    except ValueError as exc:
        raise RequestError(f"query parameter {key!r}: {exc}") from None


def _assign(target: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for name in path[:-1]:
        nested = target.setdefault(name, {})
        if not isinstance(nested, dict):
            raise RequestError(f"{'.'.join(path)} conflicts with {name}")
        target = nested
    target[path[-1]] = value


def _merge(target: dict[str, Any], extra: dict[str, Any]) -> None:
    for key, value in extra.items():
        current = target.get(key)
        if isinstance(current, dict) and isinstance(value, dict):
            _merge(current, value)
        else:
            target[key] = value


def _fill_update_mask(route: Route, message: Message, body_json: dict[str, Any]) -> None:
    """grpc-gateway's PATCH feature: an empty FieldMask gets the body's leaf paths."""
    body_field = route.body_field
    if body_field is None or not is_plain_message(body_field) or body_field.is_repeated:
        return
    masks = [
        field
        for field in route.input_type.fields
        if is_message(field) and not field.is_repeated and message_of(field).full_name == FIELD_MASK
    ]
    if len(masks) != 1:
        return
    mask = getattr(message, masks[0].name)
    if not mask.paths:
        mask.paths.extend(_leaf_paths(message_of(body_field), body_json, ""))


def _leaf_paths(desc: Descriptor, value: dict[str, Any], prefix: str) -> list[str]:
    paths: list[str] = []
    for key, item in value.items():
        field = find_field(desc, key)
        if field is None:
            continue
        path = prefix + field.name
        if is_plain_message(field) and not field.is_repeated and isinstance(item, dict) and item:
            paths.extend(_leaf_paths(message_of(field), item, path + "."))
        else:
            paths.append(path)
    return paths
