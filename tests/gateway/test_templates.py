"""Path templates: grammar, matching, precedence and percent-decoding; and the
start-up checks on google.api.http rules."""

from __future__ import annotations

import itertools
from urllib.parse import quote

import pytest
from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import FileDescriptor
from hypothesis import given
from hypothesis import strategies as st

from kaireon_server.gateway.routes import Route, RouteTable, build_routes
from kaireon_server.gateway.templates import (
    PathDecodeError,
    TemplateError,
    parse_template,
    percent_decode,
    split_path,
)


@pytest.mark.parametrize(
    "source",
    [
        "v1/x",  # no leading slash
        "/v1/x/",  # trailing slash
        "/v1//x",  # empty segment
        "/v1/{x",  # unterminated variable
        "/v1/x}",
        "/v1/{a/{b}}",  # nested variables
        "/v1/{a=**}/x",  # ** not last
        "/v1/**/x",
        "/v1/{a}/{a}",  # field bound twice
        "/v1/{a-b}",  # not a field path
        "/v1/x:",  # empty verb
        "/v1/x:a/b",
        "/v1/a*b",
    ],
)
def test_bad_templates_are_rejected(source: str) -> None:
    with pytest.raises(TemplateError):
        parse_template(source)


def test_template_structure() -> None:
    template = parse_template("/v1/{book.name=publishers/*/books/*}:publish")
    assert template.verb == "publish"
    assert [v.field_path for v in template.variables] == [("book", "name")]
    assert template.variables[0].pattern == "publishers/*/books/*"
    matched = template.match(["v1", "publishers", "p", "books", "b"])
    assert matched is not None
    assert matched[1] == {"book.name": "publishers/p/books/b"}
    assert template.match(["v1", "publishers", "p", "books"]) is None
    assert template.match(["v1", "authors", "p", "books", "b"]) is None


def _rank(source: str, path: str) -> tuple[int, ...]:
    segments, _ = split_path(path, frozenset())[-1]
    matched = parse_template(source).match(segments)
    assert matched is not None, (source, path)
    return matched[0]


def test_precedence_literal_over_star_over_deep() -> None:
    path = "/v1/a/b"
    ranks = {
        source: _rank(source, path)
        for source in ("/v1/a/b", "/v1/a/*", "/v1/*/b", "/v1/*/*", "/v1/a/{x=**}", "/v1/{x=**}")
    }
    ordered = sorted(ranks, key=lambda source: ranks[source], reverse=True)
    # Envoy's trie order: segment by segment, literal before "*" before "**".
    assert ordered == ["/v1/a/b", "/v1/a/*", "/v1/a/{x=**}", "/v1/*/b", "/v1/*/*", "/v1/{x=**}"]
    # A literal route beats a "**" that matches nothing (grpc-gateway #5771).
    assert _rank("/v1/files", "/v1/files") > _rank("/v1/files/{p=**}", "/v1/files")


def test_split_path_strips_only_registered_verbs() -> None:
    verbs = frozenset({"cancel"})
    assert split_path("/v1/t/7:cancel", verbs) == [
        (["v1", "t", "7"], "cancel"),
        (["v1", "t", "7:cancel"], ""),
    ]
    assert split_path("/v1/t/7:other", verbs) == [(["v1", "t", "7:other"], "")]


def test_percent_decoding() -> None:
    assert percent_decode("a%20b%2Fc") == "a b/c"
    assert percent_decode("a%20b%2Fc%3a", keep_reserved=True) == "a b%2Fc%3a"
    assert percent_decode("%C3%A9") == "\u00e9"
    for bad in ("%", "%2", "%zz", "%ff", "a%G1"):
        with pytest.raises(PathDecodeError):
            percent_decode(bad)


@given(st.text(min_size=1))
def test_single_segment_variables_round_trip_any_text(text: str) -> None:
    template = parse_template("/v1/{id}")
    encoded = quote(text.encode("utf-8", "surrogatepass"), safe="")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        with pytest.raises(PathDecodeError):
            template.match(["v1", encoded])
        return
    assert template.match(["v1", encoded]) == ((2, 1, 1), {"id": text})


@given(st.lists(st.text(alphabet=st.characters(codec="utf-8"), min_size=1), min_size=1))
def test_deep_variables_keep_slashes_apart(parts: list[str]) -> None:
    template = parse_template("/files/{path=**}")
    raw = [quote(part, safe="") for part in parts]
    matched = template.match(["files", *raw])
    assert matched is not None
    value = matched[1]["path"]
    # Real separators survive as "/", escaped ones stay "%2F".
    assert value.split("/") == [percent_decode(r, keep_reserved=True) for r in raw]


_counter = itertools.count()


def _file_with_rule(rule: http_pb2.HttpRule, *, streaming: bool = False) -> FileDescriptor:
    """Registers a one-method file in the default pool; returns its descriptor."""
    n = next(_counter)
    file = descriptor_pb2.FileDescriptorProto(
        name=f"bad{n}.proto", package=f"bad{n}", syntax="proto3"
    )
    file.dependency.append("google/api/annotations.proto")
    request = file.message_type.add(name="Req")
    request.field.add(name="id", number=1, type=9, label=1)
    request.field.add(name="tags", number=2, type=9, label=3)
    request.field.add(name="sub", number=3, type=11, label=1, type_name=f".bad{n}.Req")
    service = file.service.add(name="Svc")
    method = service.method.add(
        name="Do", input_type=f".bad{n}.Req", output_type=f".bad{n}.Req", client_streaming=streaming
    )
    method.options.Extensions[annotations_pb2.http].CopyFrom(rule)
    pool = descriptor_pool.Default()
    pool.Add(file)
    return pool.FindFileByName(file.name)


@pytest.mark.parametrize(
    "rule",
    [
        http_pb2.HttpRule(get="/v1/{missing}"),
        http_pb2.HttpRule(get="/v1/{tags}"),  # repeated
        http_pb2.HttpRule(get="/v1/{sub}"),  # message
        http_pb2.HttpRule(get="/v1/{sub.nope}"),
        http_pb2.HttpRule(post="/v1/x", body="missing"),
        http_pb2.HttpRule(get="/v1/x", response_body="missing"),
        http_pb2.HttpRule(get="/v1/x/"),
        http_pb2.HttpRule(body="*"),  # no pattern
        http_pb2.HttpRule(
            get="/v1/x",
            additional_bindings=[
                http_pb2.HttpRule(get="/v1/y", additional_bindings=[http_pb2.HttpRule(get="/v1/z")])
            ],
        ),
    ],
    ids=lambda rule: str(rule).replace("\n", " "),
)
def test_bad_rules_stop_start_up(rule: http_pb2.HttpRule) -> None:
    file = _file_with_rule(rule)
    with pytest.raises(ValueError, match=r"bad\d+\.Svc\.Do"):
        build_routes([file])


def test_nested_path_field_and_client_streaming_skip() -> None:
    ok = _file_with_rule(http_pb2.HttpRule(get="/v1/{sub.id}/{id}"))
    routes = build_routes([ok])
    assert [r.template.source for r in routes] == ["/v1/{sub.id}/{id}"]
    streaming = _file_with_rule(http_pb2.HttpRule(post="/v1/up", body="*"), streaming=True)
    assert build_routes([streaming]) == []


def test_unknown_service_name_is_an_error() -> None:
    with pytest.raises(ValueError, match="not in the descriptor pool"):
        build_routes(["nope.v1.Nothing"])


def test_route_table_405_candidates() -> None:
    file = _file_with_rule(
        http_pb2.HttpRule(
            get="/v1/things/{id}",
            additional_bindings=[http_pb2.HttpRule(delete="/v1/things/{id}")],
        )
    )
    table = RouteTable(build_routes([file]))
    match = table.lookup("GET", "/v1/things/7")
    assert match is not None and isinstance(match.route, Route)
    assert match.path_values == {"id": "7"}
    assert table.lookup("PUT", "/v1/things/7") is None
    assert table.allowed_methods("/v1/things/7") == ["DELETE", "GET"]
    assert table.allowed_methods("/v1/other") == []
