"""OpenTelemetry tracing, opt-in through the standard OTEL_* variables.

On when `OTEL_TRACES_EXPORTER` names an exporter (`otlp`, `console`) or an OTLP
endpoint is set (`OTEL_EXPORTER_OTLP_ENDPOINT` / `..._TRACES_ENDPOINT`), and
`OTEL_SDK_DISABLED` is not true. Off, no span is made at all (`enabled()` is
checked before any span work). The SDK reads the rest itself: service name and
resource attributes, sampler, OTLP protocol, headers and timeouts.

Spans carry method names, route templates, status codes and statement text
(with its $n placeholders, never parameter values): no personal value.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import Link, Span, SpanKind, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from kaireon_server.platform.env import EnvReader

__all__ = [
    "TraceCarrier",
    "configure_tracing",
    "current_carrier",
    "enabled",
    "install",
    "job_span",
    "log_correlation",
    "span",
    "traceparent_metadata",
]

_state: dict[str, Any] = {"tracer": None}
_PROPAGATOR = TraceContextTextMapPropagator()


def enabled() -> bool:
    return _state["tracer"] is not None


def tracer() -> Tracer:
    result: Tracer = _state["tracer"]
    return result


def wanted(env: Mapping[str, str]) -> bool:
    reader = EnvReader(env)
    if reader.boolean("OTEL_SDK_DISABLED", False):
        return False
    exporter = (reader.raw("OTEL_TRACES_EXPORTER") or "").lower()
    if exporter:
        return exporter != "none"
    return bool(
        reader.raw("OTEL_EXPORTER_OTLP_ENDPOINT")
        or reader.raw("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def install(provider: Any, *, set_global: bool = True) -> None:
    """Use `provider` (an SDK TracerProvider) for the server's spans and SQL spans."""
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor

    if set_global:
        trace.set_tracer_provider(provider)
    instrumentor = AsyncPGInstrumentor(capture_parameters=False)  # type: ignore[no-untyped-call]
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument(tracer_provider=provider)
    _state["tracer"] = provider.get_tracer("kaireon_server")


def configure_tracing(env: Mapping[str, str]) -> Any:
    """The SDK provider with the exporters OTEL_* asks for, or None when tracing is off."""
    if enabled() or not wanted(env):
        return None
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SpanExporter,
    )

    reader = EnvReader(env)
    resource = Resource.create({"service.name": reader.text("OTEL_SERVICE_NAME", "kaireon-server")})
    provider = TracerProvider(resource=resource)
    names = reader.csv("OTEL_TRACES_EXPORTER", ("otlp",))
    for name in names:
        exporter: SpanExporter
        if name == "console":
            exporter = ConsoleSpanExporter()
        elif name == "otlp":
            protocol = reader.text(
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
                reader.text("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            )
            if protocol == "grpc":
                from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
                    OTLPSpanExporter as GrpcExporter,
                )

                exporter = GrpcExporter()
            else:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                    OTLPSpanExporter as HttpExporter,
                )

                exporter = HttpExporter()
        else:
            from kaireon_server.platform.errors import ConfigurationError

            raise ConfigurationError(
                f"OTEL_TRACES_EXPORTER: unsupported exporter {name!r} (otlp, console, none)"
            )
        provider.add_span_processor(BatchSpanProcessor(exporter))
    install(provider)
    return provider


def uninstall() -> None:
    """Tracing off again (tests): no more spans, SQL no longer wrapped."""
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor

    _state["tracer"] = None
    instrumentor = AsyncPGInstrumentor()  # type: ignore[no-untyped-call]
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()


def shutdown() -> None:
    provider = trace.get_tracer_provider()
    flush = getattr(provider, "shutdown", None)
    if callable(flush):
        flush()


class _MetadataGetter(Getter[Mapping[str, str]]):
    def get(self, carrier: Mapping[str, str], key: str) -> list[str] | None:
        value = carrier.get(key)
        return [value] if value is not None else None

    def keys(self, carrier: Mapping[str, str]) -> list[str]:
        return list(carrier)


_GETTER = _MetadataGetter()


def extract(metadata: Iterable[tuple[str, Any]] | None) -> otel_context.Context:
    """The caller's trace context from gRPC metadata (W3C traceparent).

    traceparent is a single value: sent twice, neither is believed (a new trace
    starts). tracestate is a list: several headers are joined, as W3C says.
    """
    parents: list[str] = []
    states: list[str] = []
    for k, v in metadata or ():
        if isinstance(v, str) and k in ("traceparent", "tracestate"):
            (parents if k == "traceparent" else states).append(v)
    if len(parents) != 1:
        return otel_context.Context()
    carrier = {"traceparent": parents[0]}
    if states:
        carrier["tracestate"] = ",".join(states)
    return _PROPAGATOR.extract(carrier, getter=_GETTER)


def traceparent_metadata() -> list[tuple[str, str]]:
    """traceparent (and tracestate) of the current span, as gRPC metadata."""
    if not enabled():
        return []
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return list(carrier.items())


def log_correlation() -> dict[str, str]:
    """trace_id, span_id and trace_flags of the active span, in OpenTelemetry's
    names for logs that are not OTLP (hex, as in traceparent); empty when tracing
    is off or no span is active."""
    if not enabled():
        return {}
    found = trace.get_current_span().get_span_context()
    if not found.is_valid:
        return {}
    return {
        "trace_id": f"{found.trace_id:032x}",
        "span_id": f"{found.span_id:016x}",
        "trace_flags": f"{found.trace_flags:02x}",
    }


# W3C: vendors propagate at least 512 characters of tracestate; a longer one is
# dropped rather than stored (migration 0170 bounds the column the same way).
MAX_TRACESTATE = 512


@dataclass(frozen=True)
class TraceCarrier:
    """A W3C trace context to keep with queued work: traceparent and tracestate only."""

    traceparent: str
    tracestate: str | None = None

    def context(self) -> otel_context.Context:
        carrier = {"traceparent": self.traceparent}
        if self.tracestate:
            carrier["tracestate"] = self.tracestate
        return _PROPAGATOR.extract(carrier, getter=_GETTER)

    def span_context(self) -> trace.SpanContext | None:
        found = trace.get_current_span(self.context()).get_span_context()
        return found if found.is_valid else None


def current_carrier() -> TraceCarrier | None:
    """The current span's context, to store with work another task picks up later.
    None when tracing is off or no span is active."""
    if not enabled():
        return None
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    traceparent = carrier.get("traceparent")
    if not traceparent:
        return None
    tracestate = carrier.get("tracestate") or None
    if tracestate is not None and len(tracestate) > MAX_TRACESTATE:
        tracestate = None
    return TraceCarrier(traceparent, tracestate)


@contextlib.contextmanager
def span(
    name: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, str | int | float | bool] | None = None,
    parent: otel_context.Context | None = None,
    links: Iterable[Link] = (),
) -> Iterator[Span | None]:
    """A span when tracing is on, else nothing (and no cost beyond this check)."""
    if not enabled():
        yield None
        return
    with tracer().start_as_current_span(
        name, context=parent, kind=kind, attributes=dict(attributes or {}), links=list(links)
    ) as current:
        yield current


@contextlib.contextmanager
def job_span(
    name: str,
    origin: TraceCarrier | None,
    *,
    queued_seconds: float,
    child_within_seconds: float,
    attributes: Mapping[str, str | int | float | bool] | None = None,
) -> Iterator[Span | None]:
    """The span of queued work, tied to the call that queued it (`origin`).

    Always a CONSUMER span with a link to that call, as OpenTelemetry's messaging
    conventions ask of a span processing a message. Picked up within
    `child_within_seconds`, also its child, in its trace (the caller's sampling
    decision holds). Later, a new root trace: backends and tail samplers close a
    trace minutes after its root ends, so a child hours later would be lost.
    No origin (queued with tracing off): a root span without a link.
    """
    if not enabled():
        yield None
        return
    origin_context = origin.span_context() if origin is not None else None
    fields = {**(attributes or {}), "kaireon.queued_seconds": round(queued_seconds, 3)}
    links = [Link(origin_context)] if origin_context is not None else []
    if origin is not None and origin_context is not None and queued_seconds <= child_within_seconds:
        parent = origin.context()
    else:
        # A root: an empty context, not whatever span happens to be current here.
        parent = otel_context.Context()
    with span(
        name, kind=SpanKind.CONSUMER, attributes=fields, parent=parent, links=links
    ) as current:
        yield current
