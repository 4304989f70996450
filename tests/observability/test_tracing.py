"""One REST erasure, traced with an in-memory exporter: REST -> gRPC -> SQL in
one tree, and no personal value anywhere in the spans."""

from __future__ import annotations

import aiohttp
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from kaireon_server.app import App
from kaireon_server.demo.seed import seed_tenant
from kaireon_server.platform.observability import tracing
from tests.erasure.support import SMALL
from tests.observability.support import span_values

CUSTOMER = "cust_00002"
CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


async def test_rest_erasure_trace_tree_has_no_personal_values(
    traced_app: App, tenant: str, exporter: InMemorySpanExporter
):
    assert traced_app.db is not None
    await seed_tenant(traced_app.db, tenant, SMALL)
    exporter.clear()
    url = f"http://127.0.0.1:{traced_app.http_port}/api/v1/gdpr/erasure"
    headers = {
        "Content-Type": "application/json",
        "X-Tenant-Id": tenant,
        "X-User-Role": "admin",
        # The client's own trace: the REST span joins it (W3C traceparent).
        "traceparent": f"00-{CLIENT_TRACE}-00f067aa0ba902b7-01",
    }
    async with aiohttp.ClientSession() as session:
        async with session.post(url, json={"customerId": CUSTOMER}, headers=headers) as response:
            assert response.status == 200, await response.text()
    spans = [
        s for s in exporter.get_finished_spans() if f"{s.context.trace_id:032x}" == CLIENT_TRACE
    ]
    by_id = {s.context.span_id: s for s in spans}

    rest = [s for s in spans if s.kind is SpanKind.SERVER and s.name.startswith("POST ")]
    assert len(rest) == 1
    assert rest[0].name == "POST /api/v1/gdpr/erasure"
    assert rest[0].attributes["http.route"] == "/api/v1/gdpr/erasure"
    assert rest[0].attributes["http.response.status_code"] == 200

    rpc = [s for s in spans if s.attributes.get("rpc.system") == "grpc"]
    assert [s.name for s in rpc] == ["kaireon.erasure.v1.ErasureService/EraseCustomer"]
    assert rpc[0].parent is not None and rpc[0].parent.span_id == rest[0].context.span_id
    assert rpc[0].attributes["rpc.grpc.status_code"] == 0

    sql = [s for s in spans if s.kind is SpanKind.CLIENT]
    assert len(sql) >= 5, [s.name for s in spans]
    for span in sql:
        # Each statement under the gRPC call (directly or through another span).
        parent = span.parent
        ancestors = []
        while parent is not None and parent.span_id in by_id:
            ancestors.append(parent.span_id)
            parent = by_id[parent.span_id].parent
        assert rpc[0].context.span_id in ancestors
        assert "db.statement.parameters" not in (span.attributes or {})
    assert any("DELETE" in s.name for s in sql)

    # No personal value anywhere, and the tenant only inside the name of one of
    # its own ds_<tenant>_* tables (statement text, not a value).
    for span in spans:
        for value in span_values(span):
            assert CUSTOMER not in value, (span.name, value)
            assert tenant not in value.replace(f'"ds_{tenant}_', '"ds_'), (span.name, value)


async def test_tracing_off_makes_no_spans_and_forwards_no_traceparent(app: App, tenant: str):
    assert not tracing.enabled()
    assert tracing.traceparent_metadata() == []
    with tracing.span("x") as span:
        assert span is None


@pytest.mark.parametrize(
    ("env", "wanted"),
    [
        ({}, False),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"}, True),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, False),
    ],
)
def test_tracing_is_opt_in_through_otel_variables(env: dict[str, str], wanted: bool):
    assert tracing.wanted(env) is wanted
