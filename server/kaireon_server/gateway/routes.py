"""Routes built from the google.api.http options of compiled service descriptors."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

from google.api import (
    annotations_pb2,
    http_pb2,
)
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.descriptor import (
    Descriptor,
    FieldDescriptor,
    FileDescriptor,
    MethodDescriptor,
    ServiceDescriptor,
)
from google.protobuf.message import Message

from kaireon_server.gateway.fields import HTTP_BODY, is_message, message_of, resolve_path
from kaireon_server.gateway.templates import (
    PathTemplate,
    TemplateError,
    parse_template,
    split_path,
)

_log = logging.getLogger(__name__)

# The six Kaireon services and the generated modules that register them.
DEFAULT_SERVICES: dict[str, str] = {
    "kaireon.audit.v1.AuditService": "kaireon.audit.v1.audit_pb2",
    "kaireon.dsar.v1.DsarService": "kaireon.dsar.v1.dsar_pb2",
    "kaireon.erasure.v1.ErasureService": "kaireon.erasure.v1.erasure_pb2",
    "kaireon.provenance.v1.ProvenanceService": "kaireon.provenance.v1.provenance_pb2",
    "kaireon.flow.v1.FlowRunnerService": "kaireon.flow.v1.flow_pb2",
    "kaireon.requests.v1.RequestService": "kaireon.requests.v1.requests_pb2",
}

ServiceRef = str | ServiceDescriptor | FileDescriptor


@dataclass(frozen=True)
class Route:
    """One HTTP binding of one RPC."""

    http_method: str
    template: PathTemplate
    body: str  # "", "*" or a top-level field name
    response_body: str  # "" or a top-level field name
    method: MethodDescriptor
    index: int  # declaration order; on equal rank the later route wins
    binding: int  # 0 for the main rule, n for the n-th additional binding

    @property
    def grpc_path(self) -> str:
        return f"/{self.method.containing_service.full_name}/{self.method.name}"

    @property
    def server_streaming(self) -> bool:
        return bool(self.method.server_streaming)

    @property
    def input_type(self) -> Descriptor:
        return self.method.input_type

    @property
    def output_type(self) -> Descriptor:
        return self.method.output_type

    @cached_property
    def input_class(self) -> type[Message]:
        return message_factory.GetMessageClass(self.method.input_type)

    @cached_property
    def output_class(self) -> type[Message]:
        return message_factory.GetMessageClass(self.method.output_type)

    @cached_property
    def body_field(self) -> FieldDescriptor | None:
        return self.input_type.fields_by_name[self.body] if self.body not in ("", "*") else None

    @cached_property
    def response_field(self) -> FieldDescriptor | None:
        return self.output_type.fields_by_name[self.response_body] if self.response_body else None

    @property
    def raw_request_body(self) -> bool:
        """Whether the request body is taken as raw bytes into a google.api.HttpBody."""
        if self.body == "*":
            return self.input_type.full_name == HTTP_BODY
        field = self.body_field
        return field is not None and is_message(field) and message_of(field).full_name == HTTP_BODY

    @property
    def raw_response_body(self) -> bool:
        """Whether the response (or its response_body field) is a google.api.HttpBody."""
        field = self.response_field
        if field is None:
            return self.output_type.full_name == HTTP_BODY
        return (
            is_message(field) and not field.is_repeated and message_of(field).full_name == HTTP_BODY
        )

    @property
    def bound_paths(self) -> list[tuple[str, ...]]:
        """Field paths (proto names) set from the path or the body; query skips them."""
        paths = [var.field_path for var in self.template.variables]
        if self.body_field is not None:
            paths.append((self.body_field.name,))
        return paths

    @property
    def operation_id(self) -> str:
        service = self.method.containing_service.name
        suffix = str(self.binding + 1) if self.binding else ""
        return f"{service}_{self.method.name}{suffix}"


@dataclass(frozen=True)
class RouteMatch:
    route: Route
    path_values: dict[str, str]


class RouteTable:
    """Finds the route of a request: most specific template, then last declared."""

    def __init__(self, routes: Sequence[Route]) -> None:
        self.routes = tuple(routes)
        self._verbs = frozenset(r.template.verb for r in self.routes if r.template.verb)
        # Buckets by (method, verb, segment count); "**" routes match any count
        # from theirs - 1 up, so they sit in one bucket per (method, verb).
        self._exact: dict[tuple[str, str, int], list[Route]] = {}
        self._deep: dict[tuple[str, str], list[Route]] = {}
        for route in self.routes:
            template = route.template
            if template.has_deep:
                self._deep.setdefault((route.http_method, template.verb), []).append(route)
            else:
                key = (route.http_method, template.verb, len(template.segments))
                self._exact.setdefault(key, []).append(route)

    def _candidates(self, http_method: str, verb: str, count: int) -> list[Route]:
        exact = self._exact.get((http_method, verb, count), [])
        deep = self._deep.get((http_method, verb))
        return exact + deep if deep else exact

    def lookup(self, http_method: str, raw_path: str) -> RouteMatch | None:
        """The route for the request, or None. Raises PathDecodeError."""
        for segments, verb in split_path(raw_path, self._verbs):
            best: tuple[tuple[int, ...], int] | None = None
            found: RouteMatch | None = None
            for route in self._candidates(http_method, verb, len(segments)):
                matched = route.template.match(segments)
                if matched is None:
                    continue
                key = (matched[0], route.index)
                if best is None or key > best:
                    best, found = key, RouteMatch(route, matched[1])
            if found is not None:
                return found
        return None

    def allowed_methods(self, raw_path: str) -> list[str]:
        """HTTP methods of every route whose template matches the path."""
        allowed: set[str] = set()
        for segments, verb in split_path(raw_path, self._verbs):
            for route in self.routes:
                if route.template.verb == verb and route.template.match(segments):
                    allowed.add(route.http_method)
        return sorted(allowed)


def resolve_services(
    services: Sequence[ServiceRef], pool: descriptor_pool.DescriptorPool | None = None
) -> list[ServiceDescriptor]:
    """Service descriptors for full names, service descriptors or file descriptors."""
    pool = pool or descriptor_pool.Default()
    resolved: list[ServiceDescriptor] = []
    for ref in services:
        if isinstance(ref, ServiceDescriptor):
            resolved.append(ref)
        elif isinstance(ref, FileDescriptor):
            resolved.extend(ref.services_by_name.values())
        else:
            if ref in DEFAULT_SERVICES:
                importlib.import_module(DEFAULT_SERVICES[ref])
            try:
                resolved.append(pool.FindServiceByName(ref))
            except KeyError:
                raise ValueError(
                    f"service {ref!r} is not in the descriptor pool; import its _pb2 module"
                ) from None
    return resolved


def build_routes(services: Sequence[ServiceRef]) -> list[Route]:
    """Every HTTP binding of every method of the services, validated.

    Raises ValueError (TemplateError) for a rule that cannot be served.
    """
    routes: list[Route] = []
    for service in resolve_services(services):
        for method in service.methods:
            options = method.GetOptions()
            if not options.HasExtension(annotations_pb2.http):
                continue
            if method.client_streaming:
                _log.warning(
                    "skipping client-streaming method %s: not served over REST", method.full_name
                )
                continue
            rule = options.Extensions[annotations_pb2.http]
            rules = [rule, *rule.additional_bindings]
            for binding, current in enumerate(rules):
                if binding and current.additional_bindings:
                    raise TemplateError(f"{method.full_name}: nested additional_bindings")
                routes.append(_route(method, current, len(routes), binding))
    return routes


def _route(method: MethodDescriptor, rule: http_pb2.HttpRule, index: int, binding: int) -> Route:
    kind = rule.WhichOneof("pattern")
    if kind is None:
        raise TemplateError(f"{method.full_name}: http rule without a pattern")
    if kind == "custom":
        http_method, source = rule.custom.kind.upper(), rule.custom.path
    else:
        http_method, source = kind.upper(), getattr(rule, kind)
    try:
        template = parse_template(source)
    except TemplateError as exc:
        raise TemplateError(f"{method.full_name}: {exc}") from None
    route = Route(http_method, template, rule.body, rule.response_body, method, index, binding)
    _validate(route)
    return route


def _validate(route: Route) -> None:
    name = route.method.full_name
    for var in route.template.variables:
        chain = resolve_path(route.input_type, var.field_path)
        # Templates name fields by their proto names.
        if not chain or [f.name for f in chain] != list(var.field_path):
            raise TemplateError(f"{name}: path variable {'.'.join(var.field_path)} is not a field")
        leaf = chain[-1]
        if leaf.is_repeated or is_message(leaf):
            raise TemplateError(f"{name}: path variable {leaf.name} must be a singular scalar")
    if route.body not in ("", "*") and route.body not in route.input_type.fields_by_name:
        raise TemplateError(f"{name}: body field {route.body!r} does not exist")
    if route.response_body and route.response_body not in route.output_type.fields_by_name:
        raise TemplateError(f"{name}: response_body field {route.response_body!r} does not exist")
