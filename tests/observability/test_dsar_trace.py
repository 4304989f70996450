"""A DSAR export job in the trace of the REST call that queued it, and trace ids
in the JSON log lines written while a span is active."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator

import aiohttp
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from kaireon_server.app import App
from kaireon_server.demo.seed import customer_id, seed_tenant
from kaireon_server.platform.observability import tracing
from tests.erasure.support import SMALL
from tests.observability.support import headers, span_values
from tests.support.log_scan import CollectingHandler

CLIENT_TRACE = "0af7651916cd43dd8448eb211c80319c"
CLIENT_SPAN = "b7ad6b7169203331"
SUBJECT = customer_id(3)


@pytest.fixture
def log_lines() -> Iterator[CollectingHandler]:
    """The server's log records, formatted as production formats them (JSON)."""
    handler = CollectingHandler()
    logging.getLogger().addHandler(handler)
    try:
        yield handler
    finally:
        logging.getLogger().removeHandler(handler)


def _in_trace(exporter: InMemorySpanExporter, trace_id: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if f"{s.context.trace_id:032x}" == trace_id]


def _ancestors(span: ReadableSpan, by_id: dict[int, ReadableSpan]) -> list[int]:
    found = []
    parent = span.parent
    while parent is not None and parent.span_id in by_id:
        found.append(parent.span_id)
        parent = by_id[parent.span_id].parent
    return found


async def test_rest_dsar_export_job_is_a_child_of_the_creating_call(
    traced_app: App, tenant: str, exporter: InMemorySpanExporter, log_lines: CollectingHandler
):
    assert traced_app.db is not None
    await seed_tenant(traced_app.db, tenant, SMALL)
    exporter.clear()
    base = f"http://127.0.0.1:{traced_app.http_port}"
    async with aiohttp.ClientSession(base_url=base) as http:
        async with http.post(
            "/api/v1/dsar",
            json={"subjectId": SUBJECT, "requestType": "export"},
            headers={**headers(tenant), "traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"},
        ) as response:
            assert response.status == 200, await response.text()
            request_id = (await response.json())["request"]["id"]

    # The job's span ends just after its transaction commits: wait for the span.
    for _ in range(300):
        jobs = [s for s in _in_trace(exporter, CLIENT_TRACE) if s.name == "dsar.export"]
        if jobs:
            break
        await asyncio.sleep(0.1)
    else:
        names = sorted({s.name for s in exporter.get_finished_spans()})
        raise AssertionError(f"no dsar.export span in the caller's trace: {names}")
    spans = _in_trace(exporter, CLIENT_TRACE)
    by_id = {s.context.span_id: s for s in spans}

    create = [s for s in spans if s.name == "kaireon.dsar.v1.DsarService/CreateDsarRequest"]
    assert len(create) == 1
    assert len(jobs) == 1
    job = jobs[0]
    assert job.kind is SpanKind.CONSUMER
    assert job.parent is not None and job.parent.span_id == create[0].context.span_id
    # And a link to it, as OpenTelemetry's messaging conventions ask of a consumer.
    assert [link.context.span_id for link in job.links] == [create[0].context.span_id]
    assert job.attributes is not None
    assert job.attributes["dsar.attempt"] == 1
    assert 0 <= float(job.attributes["kaireon.queued_seconds"]) < 300

    # The job's statements (both dedicated connections) are in the trace, under it.
    job_sql = [
        s
        for s in spans
        if s.kind is SpanKind.CLIENT and job.context.span_id in _ancestors(s, by_id)
    ]
    assert len(job_sql) >= 5, [s.name for s in job_sql]
    assert any(
        "dsar_export_chunk" in str((s.attributes or {}).get("db.statement")) for s in job_sql
    )
    for span in job_sql:
        assert "db.statement.parameters" not in (span.attributes or {})

    # No customer id anywhere; the tenant only inside its own ds_<tenant>_* table names.
    for span in spans:
        for value in span_values(span):
            assert SUBJECT not in value, (span.name, value)
            assert tenant not in value.replace(f'"ds_{tenant}_', '"ds_'), (span.name, value)

    # What the request row keeps: the W3C context of the gRPC call, nothing else.
    async with traced_app.db.transaction(tenant) as con:
        stored = await con.fetchrow(
            "SELECT trace_parent, trace_state FROM dsar_request WHERE tenant_id = $1 AND id = $2::uuid",
            tenant,
            request_id,
        )
    assert stored is not None
    assert stored["trace_parent"] == f"00-{CLIENT_TRACE}-{create[0].context.span_id:016x}-01"
    assert stored["trace_state"] is None

    # The worker's log lines carry the job span's ids (OpenTelemetry log correlation).
    started = [
        json.loads(line)
        for line in log_lines.lines
        if '"dsar export started"' in line and request_id in line
    ]
    assert len(started) == 1, log_lines.lines[-20:]
    assert started[0]["trace_id"] == CLIENT_TRACE
    assert started[0]["span_id"] == f"{job.context.span_id:016x}"
    assert started[0]["trace_flags"] == "01"


def test_job_queued_long_ago_starts_its_own_trace_linked_to_the_call(
    exporter: InMemorySpanExporter,
):
    with tracing.span("CreateDsarRequest"):
        origin = tracing.current_carrier()
    assert origin is not None
    with tracing.job_span("dsar.export", origin, queued_seconds=7200, child_within_seconds=3600):
        pass
    [creating] = [s for s in exporter.get_finished_spans() if s.name == "CreateDsarRequest"]
    [job] = [s for s in exporter.get_finished_spans() if s.name == "dsar.export"]
    assert job.parent is None
    assert job.context.trace_id != creating.context.trace_id
    assert [link.context.span_id for link in job.links] == [creating.context.span_id]
    assert [link.context.trace_id for link in job.links] == [creating.context.trace_id]


def test_job_queued_with_tracing_off_is_a_root_span(exporter: InMemorySpanExporter):
    with tracing.span("outer"):
        # Current span "outer" must not become the job's parent: no origin, a root.
        with tracing.job_span("dsar.export", None, queued_seconds=1, child_within_seconds=3600):
            pass
    [job] = [s for s in exporter.get_finished_spans() if s.name == "dsar.export"]
    assert job.parent is None and not job.links


def test_tracestate_beyond_the_w3c_minimum_is_not_kept(exporter: InMemorySpanExporter):
    from kaireon_server.platform.observability.tracing import TraceCarrier

    long_state = ",".join(f"v{n}=" + "x" * 40 for n in range(20))  # > 512 characters
    parent = TraceCarrier(f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01", long_state).context()
    with tracing.span("call", parent=parent):
        carrier = tracing.current_carrier()
    assert carrier is not None and carrier.traceparent.startswith(f"00-{CLIENT_TRACE}-")
    assert carrier.tracestate is None


def _log_line(message: str) -> dict[str, object]:
    handler = CollectingHandler()
    logger = logging.getLogger("kaireon_test.correlation")
    logger.addHandler(handler)
    try:
        logger.warning(message)
    finally:
        logger.removeHandler(handler)
    [line] = handler.lines
    parsed: dict[str, object] = json.loads(line)
    return parsed


def test_log_lines_carry_the_active_span_ids(exporter: InMemorySpanExporter):
    with tracing.span("work") as span:
        assert span is not None
        inside = _log_line("inside a span")
    outside = _log_line("outside any span")
    context = span.get_span_context()
    assert inside["trace_id"] == f"{context.trace_id:032x}"
    assert inside["span_id"] == f"{context.span_id:016x}"
    assert int(str(inside["trace_flags"]), 16) & 0x01  # sampled (0x02 may mark a random id)
    assert not {"trace_id", "span_id", "trace_flags"} & set(outside)


def test_log_lines_carry_no_trace_fields_when_tracing_is_off():
    assert not tracing.enabled()
    with tracing.span("work") as span:
        assert span is None
        line = _log_line("tracing off")
    assert not {"trace_id", "span_id", "trace_flags"} & set(line)


async def test_flow_nodes_and_the_exports_they_queue_are_in_the_starting_calls_trace(
    traced_app: App, tenant: str, exporter: InMemorySpanExporter
):
    """REST StartRun -> gRPC -> flow.node (each node) -> sink.dsar_export queues a
    request -> its export job: one trace."""
    assert traced_app.db is not None
    await seed_tenant(traced_app.db, tenant, SMALL)
    exporter.clear()
    trace_id = "5b8efff798038103d269b633813fc60c"
    definition = {
        "name": "traced",
        "nodes": [
            {
                "id": "src",
                "type": "source.inline",
                "config": {"records": [{"customer_id": SUBJECT}]},
            },
            {"id": "dsar", "type": "sink.dsar_export", "dependsOn": ["src"]},
        ],
    }
    base = f"http://127.0.0.1:{traced_app.http_port}"
    async with aiohttp.ClientSession(base_url=base) as http:
        async with http.post(
            "/api/v1/flow/runs",
            json={"definition": definition, "runId": "traced-1"},
            headers={
                **headers(tenant, "operator"),
                "traceparent": f"00-{trace_id}-{CLIENT_SPAN}-01",
            },
        ) as response:
            assert response.status == 200, await response.text()
    for _ in range(300):
        if any(s.name == "dsar.export" for s in _in_trace(exporter, trace_id)):
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("the export queued by the flow is not in the caller's trace")
    spans = _in_trace(exporter, trace_id)
    by_id = {s.context.span_id: s for s in spans}
    [start] = [s for s in spans if s.name == "kaireon.flow.v1.FlowRunnerService/StartRun"]
    nodes = [s for s in spans if s.name == "flow.node"]
    assert sorted(str((s.attributes or {})["flow.node.type"]) for s in nodes) == [
        "sink.dsar_export",
        "source.inline",
    ]
    for node in nodes:
        assert start.context.span_id in _ancestors(node, by_id)
    [sink] = [s for s in nodes if (s.attributes or {})["flow.node.type"] == "sink.dsar_export"]
    [job] = [s for s in spans if s.name == "dsar.export"]
    assert start.context.span_id in _ancestors(job, by_id)
    assert sink.context.span_id in _ancestors(job, by_id)
    for span in spans:
        for value in span_values(span):
            assert SUBJECT not in value, (span.name, value)


@pytest.mark.parametrize(
    "incoming",
    [
        [("traceparent", "00-" + "0" * 32 + "-" + CLIENT_SPAN + "-01")],  # all-zero trace id
        [("traceparent", f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01\n")],  # trailing newline
        [("traceparent", "ff-" + CLIENT_TRACE + "-" + CLIENT_SPAN + "-01")],  # version ff
        [("traceparent", "x" * 100_000)],  # huge
        [("traceparent", f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"), ("tracestate", "=" * 100_000)],
    ],
)
def test_hostile_trace_context_never_reaches_a_stored_carrier(
    exporter: InMemorySpanExporter, incoming: list[tuple[str, str]]
):
    """What is kept with a DSAR row is re-injected from the span, never the caller's text."""
    with tracing.span("call", parent=tracing.extract(incoming)):
        carrier = tracing.current_carrier()
    assert carrier is not None
    assert len(carrier.traceparent) == 55 and "\n" not in carrier.traceparent
    assert carrier.tracestate is None or len(carrier.tracestate) <= tracing.MAX_TRACESTATE
    # OpenTelemetry's parser joins a traceparent with one trailing newline (the
    # carrier it yields is clean); anything else malformed starts a new trace.
    if incoming[0][1].rstrip("\n") != f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01":
        assert not carrier.traceparent.startswith(f"00-{CLIENT_TRACE}-")


async def test_a_traceparent_sent_twice_is_not_believed(
    traced_app: App, tenant: str, exporter: InMemorySpanExporter
):
    """traceparent is single-valued: two headers (REST) or two metadata entries
    (the gateway's gRPC call) start a new trace instead of joining either one;
    several tracestate headers are one list, as W3C says."""
    other = "4bf92f3577b34da6a3ce929d0e0e4736"
    exporter.clear()
    base = f"http://127.0.0.1:{traced_app.http_port}"
    missing = "/api/v1/dsar/00000000-0000-4000-8000-000000000000"
    async with aiohttp.ClientSession(base_url=base) as http:
        twice = [
            *headers(tenant).items(),
            ("traceparent", f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"),
            ("traceparent", f"00-{other}-{CLIENT_SPAN}-01"),
        ]
        async with http.get(missing, headers=twice) as response:
            assert response.status == 404, await response.text()
        once = [*headers(tenant).items(), ("traceparent", f"00-{other}-{CLIENT_SPAN}-01")]
        async with http.get(missing, headers=once) as response:
            assert response.status == 404, await response.text()
    assert not _in_trace(exporter, CLIENT_TRACE)
    rest = [
        s
        for s in exporter.get_finished_spans()
        if s.kind is SpanKind.SERVER and (s.attributes or {}).get("http.request.method") == "GET"
    ]
    assert len(rest) == 2, [s.name for s in rest]
    # The first request started a trace of its own; the second joined the client's.
    assert rest[0].parent is None and f"{rest[0].context.trace_id:032x}" != other
    assert rest[1].parent is not None and f"{rest[1].context.trace_id:032x}" == other

    parent = tracing.extract(
        [
            ("traceparent", f"00-{other}-{CLIENT_SPAN}-01"),
            ("tracestate", "a=1"),
            ("tracestate", "b=2"),
        ]
    )
    with tracing.span("probe", parent=parent):
        carrier = tracing.current_carrier()
    assert carrier is not None and carrier.tracestate == "a=1,b=2"
