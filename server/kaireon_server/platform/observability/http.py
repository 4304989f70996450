"""REST adapter requests: metrics by route template and a server span."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping
from typing import Any

from opentelemetry.trace import SpanKind, StatusCode

from kaireon_server.platform.observability import metrics, tracing

# Requests that matched no route share one label: the raw path never becomes one.
UNMATCHED = "unmatched"


class ObservedRequest:
    def __init__(self, method: str, span: Any) -> None:
        self.method = method
        self.span = span
        self.began = time.perf_counter()

    def finish(self, route: str, status: int) -> None:
        route = route if route.startswith("/") else UNMATCHED
        if self.span is not None:
            self.span.update_name(f"{self.method} {route}")
            self.span.set_attribute("http.route", route)
            self.span.set_attribute("http.response.status_code", status)
            if status >= 500:
                self.span.set_status(StatusCode.ERROR)
        if not metrics.recording():
            return
        metrics.HTTP_REQUESTS.labels(self.method, route, str(status)).inc()
        metrics.HTTP_DURATION.labels(self.method, route).observe(time.perf_counter() - self.began)


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})


@contextlib.contextmanager
def observed_request(method: str, headers: Mapping[str, str]) -> Iterator[ObservedRequest]:
    # An unknown method is one label, not whatever the client sent.
    method = method if method in _METHODS else "OTHER"
    if not tracing.enabled():
        yield ObservedRequest(method, None)
        return
    parent = tracing.extract(
        (k.lower(), v) for k, v in headers.items() if k.lower() in ("traceparent", "tracestate")
    )
    with tracing.span(
        method,
        kind=SpanKind.SERVER,
        attributes={"http.request.method": method},
        parent=parent,
    ) as span:
        yield ObservedRequest(method, span)
