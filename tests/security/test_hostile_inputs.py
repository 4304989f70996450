"""Hand-picked hostile input over gRPC and REST, at the limits the server sets.

- every string field of every RPC (top level and inside the valid request's
  nested messages and Structs) gets SQL-injection shapes, a NUL, a 1 MiB+
  string and unicode tricks: a deliberate answer, NUL always INVALID_ARGUMENT
  naming the field, and any rejection leaves the database unchanged;
- undecodable requests (corrupt wire format, bad UTF-8, Structs nested beyond
  the parser's depth) are INVALID_ARGUMENT, not UNKNOWN;
- a message above the server's max receive size (app.MAX_MESSAGE_BYTES) is
  RESOURCE_EXHAUSTED, one just below it is judged on its content;
- REST: bodies above KAIREON_GATEWAY_MAX_BODY_BYTES are 413 (with and without
  Content-Length), deeply nested JSON, NUL (body, path, query), bad UTF-8 and
  megabyte strings are 400, SQL-shaped path segments are 400/404;
- SQL sources naming another tenant read nothing of it.
Afterwards the chain still verifies and audit_log is still there.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
import asyncpg
import grpc
import pytest
from google.protobuf import struct_pb2
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2

from kaireon.audit.v1 import audit_pb2
from kaireon.dsar.v1 import dsar_pb2
from kaireon.erasure.v1 import erasure_pb2
from kaireon.flow.v1 import flow_pb2
from kaireon_server.app import MAX_MESSAGE_BYTES, App
from kaireon_server.gateway.settings import GatewaySettings
from kaireon_server.platform.db import Database
from kaireon_server.platform.rpc.status import status_for
from tests.security.conftest import World, flow_definition, new_tenant, populate, wait_run
from tests.security.rpcs import BY_NAME, METHOD_NAMES, Outcome, call
from tests.security.snapshot import Snapshotter
from tests.security.support import NOT_DELIBERATE, settle
from tests.security.valid_requests import REQUESTS
from tests.support.server import bearer, metadata

MIB = 1024 * 1024
HOSTILE: dict[str, str] = {
    "sql_drop": "x'; DROP TABLE audit_log; --",
    "sql_union": "cust_00001' UNION SELECT integrity_hash FROM audit_log --",
    "sql_like": "%_%",
    "nul": "cust_00001\x00",
    "huge": "x" * (MIB + 1),
    "unicode": "\u202ecust\u200b\ufeff\U0001f600",
}


@pytest.fixture(scope="module")
async def target(channel: grpc.aio.Channel, db: Database, database_url: str) -> World:
    return await populate(channel, db, database_url, new_tenant("h"))


@pytest.fixture(scope="module")
async def ready(snapshots: Snapshotter, target: World) -> Snapshotter:
    await snapshots.refresh()
    return snapshots


@dataclass(frozen=True)
class Slot:
    """A string somewhere in a request: its path and how to set it in a copy."""

    path: str
    put: Callable[[Message, str], None]


def _struct_slots(prefix: str, get: Callable[[Message], struct_pb2.Struct]) -> Iterator[Slot]:
    def put_value(message: Message, value: str) -> None:
        get(message)["probe"] = value

    def put_key(message: Message, value: str) -> None:
        get(message)[value] = "probe"

    yield Slot(f"{prefix}[value]", put_value)
    yield Slot(f"{prefix}[key]", put_key)


def string_slots(
    message: Message, prefix: str = "", get: Callable[[Message], Message] = lambda m: m
) -> Iterator[Slot]:
    """Every string field of `message`, recursing into the message fields it has set."""
    for field in message.DESCRIPTOR.fields:
        path = f"{prefix}{field.name}"
        value = getattr(message, field.name)

        def getter(m: Message, name: str = field.name) -> Any:
            return getattr(get(m), name)

        if field.type == FieldDescriptor.TYPE_STRING and not field.is_repeated:

            def put(m: Message, v: str, name: str = field.name) -> None:
                setattr(get(m), name, v)

            yield Slot(path, put)
        elif field.type == FieldDescriptor.TYPE_STRING:

            def append(m: Message, v: str, g: Callable[[Message], Any] = getter) -> None:
                g(m).append(v)

            yield Slot(f"{path}[]", append)
        elif field.type == FieldDescriptor.TYPE_MESSAGE and not field.is_repeated:
            if field.message_type.full_name == "google.protobuf.Struct":
                yield from _struct_slots(path, getter)
            elif message.HasField(field.name):
                yield from string_slots(value, f"{path}.", getter)
        elif (
            field.type == FieldDescriptor.TYPE_MESSAGE
            and len(value)
            and not (field.message_type.GetOptions().map_entry)
        ):

            def first(m: Message, g: Callable[[Message], Any] = getter) -> Message:
                item: Message = g(m)[0]
                return item

            yield from string_slots(value[0], f"{path}[0].", first)


def _status(outcome: Outcome) -> status_pb2.Status | None:
    for key, value in outcome.trailing:
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            return status_pb2.Status.FromString(value)
    return None


def violation_fields(outcome: Outcome) -> list[str]:
    status = _status(outcome)
    fields: list[str] = []
    for detail in status.details if status else ():
        request = error_details_pb2.BadRequest()
        if detail.Unpack(request):
            fields += [v.field for v in request.field_violations]
    return fields


def reason(outcome: Outcome) -> str:
    status = _status(outcome)
    for detail in status.details if status else ():
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return str(info.reason)
    return ""


async def assert_db_intact(con: asyncpg.Connection, channel: grpc.aio.Channel, tenant: str) -> None:
    assert await con.fetchval("SELECT to_regclass('public.audit_log') IS NOT NULL")
    assert await con.fetchval("SELECT count(*) FROM audit_log WHERE tenant_id = $1", tenant) > 0
    verify = await call(
        channel,
        BY_NAME["AuditService.VerifyChain"],
        audit_pb2.VerifyChainRequest(),
        metadata(tenant, "admin"),
    )
    (reply,) = verify.responses
    assert isinstance(reply, audit_pb2.VerifyChainResponse) and reply.valid, reply


TRIED: dict[str, int] = {"calls": 0, "rejected": 0, "db_changes_on_rejection": 0}


# A sweep (every string field of every RPC x six values), with a database snapshot
# per call whose cost grows with the session database: slow tier.
@pytest.mark.slow
@pytest.mark.parametrize("name", METHOD_NAMES)
async def test_hostile_strings_in_every_string_field(
    name: str, target: World, ready: Snapshotter, channel: grpc.aio.Channel
) -> None:
    method = BY_NAME[name]
    seed = REQUESTS[name](target)
    slots = list(string_slots(seed))
    assert slots or not [
        f for f in method.input_type.fields if f.type == FieldDescriptor.TYPE_STRING
    ], name
    for slot in slots:
        for label, value in HOSTILE.items():
            request = type(seed)()
            request.CopyFrom(seed)
            slot.put(request, value)
            await ready.wait_idle(target.tenant)
            before = await ready.take(target.tenant)
            outcome = await call(channel, method, request, metadata(target.tenant, "admin"))
            TRIED["calls"] += 1
            where = f"{name} {slot.path} {label}"
            assert outcome.code not in NOT_DELIBERATE, (where, outcome.code, outcome.details)
            if label == "nul":
                assert outcome.code is grpc.StatusCode.INVALID_ARGUMENT, where
                top = slot.path.split(".")[0].split("[")[0]
                assert any(f.startswith(top) for f in violation_fields(outcome)), where
            if outcome.ok:
                await settle(channel, ready, target)
                continue
            TRIED["rejected"] += 1
            after = await ready.take(target.tenant)
            if after != before:
                TRIED["db_changes_on_rejection"] += 1
            assert after == before, (where, outcome.code, before.changed_tables(after))
    await assert_db_intact(ready.con, channel, target.tenant)
    print(f"\n{name}: {len(slots)} string slots; running totals {TRIED}")


async def test_sql_injection_shaped_values_are_stored_verbatim(
    target: World, channel: grpc.aio.Channel
) -> None:
    """Bind parameters, never string building: the value comes back as sent."""
    reason_text = HOSTILE["sql_drop"]
    customer = "cust'; DELETE FROM legal_hold; --"
    md = metadata(target.tenant, "admin")
    outcome = await call(
        channel,
        BY_NAME["ErasureService.SetLegalHold"],
        erasure_pb2.SetLegalHoldRequest(customer_id=customer, reason=reason_text),
        md,
    )
    assert outcome.ok, outcome.details
    listed = await call(
        channel,
        BY_NAME["ErasureService.ListLegalHolds"],
        erasure_pb2.ListLegalHoldsRequest(page_size=1000),
        md,
    )
    (reply,) = listed.responses
    assert isinstance(reply, erasure_pb2.ListLegalHoldsResponse)
    holds = {h.customer_id: h.reason for h in reply.legal_holds}
    assert holds[customer] == reason_text and holds[target.held_customer] == target.hold_reason


# --- error answers quoting caller input --------------------------------------------


async def test_errors_quoting_huge_input_stay_within_header_limits(
    target: World, ready: Snapshotter, channel: grpc.aio.Channel
) -> None:
    """Validation messages quote node types and ids; the answer is still small enough
    for gRPC's 8 KiB header budget, and a flood of problems is summarised."""
    definition = flow_pb2.FlowDefinition()
    for index in range(400):
        definition.nodes.add(id=f"n{index}", type="t" * 5000)
    md = metadata(target.tenant, "admin")
    before = await ready.take(target.tenant)
    outcome = await call(
        channel,
        BY_NAME["FlowRunnerService.StartRun"],
        flow_pb2.StartRunRequest(definition=definition),
        md,
    )
    assert outcome.code is grpc.StatusCode.INVALID_ARGUMENT, outcome.details
    assert len(outcome.details) <= 300
    header_bytes = sum(len(k) + len(v) for k, v in outcome.trailing)
    assert header_bytes < 8 * 1024, header_bytes
    fields = violation_fields(outcome)
    assert 1 < len(fields) < 400 and fields[0].startswith("definition.nodes[0]")
    status = _status(outcome)
    assert status is not None
    request = error_details_pb2.BadRequest()
    assert any(d.Unpack(request) for d in status.details)
    assert request.field_violations[-1].description.endswith("more problem(s)")
    assert await ready.take(target.tenant) == before


def _token(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode()


PAGED = [name for name in METHOD_NAMES if "page_token" in BY_NAME[name].input_type.fields_by_name]
BAD_TOKENS = {
    "int_overflow": _token({"seq": 2**70, "after": "a", "c": "2026-01-01T00:00:00Z"}),
    "bool_seq": _token({"seq": True}),
    "nul_text": _token(
        {"after": "a\x00", "c": "2026-01-01T00:00:00Z\x00", "r": "\x00", "i": "\x00"}
    ),
    "wrong_types": _token({"after": ["x"], "c": {"a": 1}, "r": None, "i": 1.5, "seq": "1"}),
    "deep": base64.urlsafe_b64encode(b"[" * 100_000 + b"]" * 100_000).decode(),
    "not_base64": "%%%",
    "not_json": base64.urlsafe_b64encode(b"\xff\xfe").decode(),
}


@pytest.mark.parametrize("name", PAGED)
async def test_forged_page_tokens_are_invalid_argument(
    name: str, target: World, ready: Snapshotter, channel: grpc.aio.Channel
) -> None:
    assert len(PAGED) == 5
    before = await ready.take(target.tenant)
    request_class = type(REQUESTS[name](target))
    for label, token in BAD_TOKENS.items():
        outcome = await call(
            channel, BY_NAME[name], request_class(page_token=token), metadata(target.tenant)
        )
        assert outcome.code is grpc.StatusCode.INVALID_ARGUMENT, (label, outcome.code)
        assert violation_fields(outcome) == ["page_token"], label
    assert await ready.take(target.tenant) == before


# --- undecodable requests ------------------------------------------------------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _ld(field_number: int, payload: bytes) -> bytes:
    """A length-delimited field: tag, length, payload."""
    return _varint(field_number << 3 | 2) + _varint(len(payload)) + payload


def deep_struct_start_run(depth: int) -> bytes:
    """StartRunRequest bytes whose node config nests `depth` Structs (built by hand:
    the Python runtime refuses to build what the server must refuse to parse)."""
    value = _ld(3, b"leaf")  # Value.string_value
    for _ in range(depth):
        struct = _ld(1, _ld(1, b"k") + _ld(2, value))  # Struct.fields{"k": value}
        value = _ld(5, struct)  # Value.struct_value
    config = _ld(1, _ld(1, b"records") + _ld(2, value))
    node = _ld(1, b"a") + _ld(2, b"source.inline") + _ld(3, config)
    return _ld(1, _ld(2, node))  # StartRunRequest.definition.nodes[0]


def _first_string_field(name: str) -> int | None:
    fields = [f for f in BY_NAME[name].input_type.fields if f.type == FieldDescriptor.TYPE_STRING]
    return fields[0].number if fields else None


@pytest.mark.parametrize("name", METHOD_NAMES)
async def test_undecodable_requests_are_invalid_argument(
    name: str, target: World, ready: Snapshotter, channel: grpc.aio.Channel
) -> None:
    payloads = {"corrupt": b"\xff\xff\xff\xff", "truncated": b"\x0a\x05ab"}
    number = _first_string_field(name)
    if number is not None:
        payloads["bad_utf8"] = _ld(number, b"\xff\xfe\xc3")
    before = await ready.take(target.tenant)
    for label, payload in payloads.items():
        outcome = await call(channel, BY_NAME[name], payload, metadata(target.tenant, "admin"))
        assert outcome.code is grpc.StatusCode.INVALID_ARGUMENT, (label, outcome)
        assert reason(outcome) == "MALFORMED_REQUEST"
    assert await ready.take(target.tenant) == before


async def test_structs_nested_beyond_the_parser_limit_are_invalid_argument(
    target: World, ready: Snapshotter, channel: grpc.aio.Channel
) -> None:
    method = BY_NAME["FlowRunnerService.StartRun"]
    md = metadata(target.tenant, "admin")
    await ready.wait_idle(target.tenant)
    before = await ready.take(target.tenant)
    for depth in (150, 1000, 20000):
        outcome = await call(channel, method, deep_struct_start_run(depth), md)
        assert outcome.code is grpc.StatusCode.INVALID_ARGUMENT, (depth, outcome.details)
        assert reason(outcome) == "MALFORMED_REQUEST"
    assert await ready.take(target.tenant) == before
    # Shallow enough to parse: judged on its content (an inline record must be an object).
    shallow = await call(channel, method, deep_struct_start_run(10), md)
    assert shallow.code in (grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT), shallow


# --- message size limits -------------------------------------------------------------


async def test_messages_beyond_max_receive_size_are_resource_exhausted(
    target: World, ready: Snapshotter, channel: grpc.aio.Channel
) -> None:
    method = BY_NAME["ErasureService.EraseCustomer"]
    md = metadata(target.tenant, "admin")
    before = await ready.take(target.tenant)

    def of_size(size: int) -> erasure_pb2.EraseCustomerRequest:
        request = erasure_pb2.EraseCustomerRequest(customer_id="x" * (size - 8))
        request.customer_id += "x" * (size - request.ByteSize())
        assert request.ByteSize() == size
        return request

    over = of_size(MAX_MESSAGE_BYTES + 1)
    outcome = await call(channel, method, over, md, timeout=60)
    assert outcome.code is grpc.StatusCode.RESOURCE_EXHAUSTED, outcome.details
    at_limit = of_size(MAX_MESSAGE_BYTES)
    outcome = await call(channel, method, at_limit, md, timeout=60)
    assert outcome.code is grpc.StatusCode.INVALID_ARGUMENT, outcome.details  # too long an id
    assert violation_fields(outcome) == ["customer_id"]
    assert await ready.take(target.tenant) == before
    await assert_db_intact(ready.con, channel, target.tenant)


# --- SQL sources naming another tenant -----------------------------------------------


@pytest.fixture(scope="module")
async def other(channel: grpc.aio.Channel, db: Database, database_url: str) -> World:
    return await populate(channel, db, database_url, new_tenant("o"))


async def test_sql_sources_naming_another_tenant_read_nothing_of_it(
    target: World, other: World, ready: Snapshotter, channel: grpc.aio.Channel
) -> None:
    await ready.refresh()
    # (query, expected): "empty" = runs and reads no row, "own" = exactly the caller's
    # rows (both tenants have the same customer ids, so counts tell them apart),
    # "rejected" = INVALID_ARGUMENT at validation, or (tables whose readability
    # depends on the tenant's registry, checked when the node runs) a failed run
    # that checkpointed nothing.
    queries = [
        (
            f"SELECT customer_id FROM interaction_history WHERE tenant_id = '{other.tenant}'",
            "empty",
        ),
        (
            f"SELECT customer_id FROM interaction_history WHERE tenant_id <> '{target.tenant}'",
            "empty",
        ),
        ("SELECT customer_id FROM interaction_history WHERE true OR tenant_id = tenant_id", "own"),
        ("SELECT customer_id FROM public.interaction_history", "own"),
        (
            "SELECT h.customer_id FROM interaction_history h JOIN decision_trace d "
            f"ON d.customer_id = h.customer_id WHERE d.tenant_id = '{other.tenant}'",
            "empty",
        ),
        (f'SELECT customer_id FROM "ds_{other.tenant}_loyalty"', "rejected"),
        ("SELECT 1; DROP TABLE audit_log", "rejected"),
        ("SELECT integrity_hash FROM audit_log", "rejected"),
        ("SELECT rolpassword FROM pg_catalog.pg_authid", "rejected"),
        ("WITH x AS (DELETE FROM legal_hold RETURNING customer_id) SELECT * FROM x", "rejected"),
        ("SELECT current_setting('kaireon.tenant_id') AS t", "rejected"),
    ]
    md = metadata(target.tenant, "admin")
    own_rows = (await ready.take(target.tenant)).rows("interaction_history")
    other_before = await ready.take(other.tenant)
    for index, (query, expected) in enumerate(queries):
        definition = flow_definition(f"sql-{index}")
        del definition.nodes[:]
        node = definition.nodes.add(id="read", type="source.sql")
        node.config.update({"query": query})
        run_id = f"sql-probe-{target.marker}-{index}"
        outcome = await call(
            channel,
            BY_NAME["FlowRunnerService.StartRun"],
            flow_pb2.StartRunRequest(definition=definition, run_id=run_id),
            md,
        )
        if expected == "rejected" and not outcome.ok:
            assert outcome.code is grpc.StatusCode.INVALID_ARGUMENT, (query, outcome.code)
            continue
        assert outcome.ok, (query, outcome.details)
        run = await wait_run(channel, target.tenant, run_id)
        output = await ready.con.fetchval(
            "SELECT output::text FROM flow_run_checkpoint WHERE tenant_id = $1 AND run_id = $2",
            target.tenant,
            run_id,
        )
        if expected == "rejected":
            assert run.state == flow_pb2.RUN_STATE_FAILED and output is None, (query, run.state)
            print(f"refused at run time: {query!r}: {run.error}")
            continue
        assert run.state == flow_pb2.RUN_STATE_SUCCEEDED, (query, run.error)
        rows = json.loads(output)
        assert len(rows) == (own_rows if expected == "own" else 0), (query, len(rows))
        assert not [s for s in other.secrets if s in output]
    assert await ready.take(other.tenant) == other_before
    await assert_db_intact(ready.con, channel, target.tenant)


# --- REST ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def http(app: App) -> AsyncIterator[tuple[aiohttp.ClientSession, str]]:
    async with aiohttp.ClientSession() as session:
        yield session, f"http://127.0.0.1:{app.http_port}"


def _headers(tenant: str) -> dict[str, str]:
    return {"X-Tenant-Id": tenant, "X-User-Role": "admin", "Content-Type": "application/json"}


async def _rest(
    http: tuple[aiohttp.ClientSession, str],
    method: str,
    path: str,
    tenant: str,
    body: bytes | AsyncIterator[bytes] | None = None,
    params: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    session, base = http
    async with session.request(
        method, base + path, data=body, params=params, headers=_headers(tenant)
    ) as response:
        return response.status, await response.read()


def _deep_json(depth: int) -> str:
    return "[" * depth + "]" * depth


@dataclass(frozen=True)
class RestCase:
    method: str
    path: str
    body: bytes | None = None
    params: dict[str, str] | None = None
    status: tuple[int, ...] = (400,)


def rest_cases(world: World) -> dict[str, RestCase]:
    sql = quote(HOSTILE["sql_drop"], safe="")
    # Valid JSON for Python's parser (under its recursion limit), too deep for protobuf.
    flow_body = (
        '{"definition": {"nodes": [{"id": "a", "type": "source.inline", "config": {"records": ['
        + '{"k": ' * 400
        + "1"
        + "}" * 400
        + "]}}]}}"
    )
    return {
        "deep_json_body": RestCase("POST", "/api/v1/gdpr/erasure", _deep_json(100_000).encode()),
        "deep_json_object": RestCase(
            "POST", "/api/v1/gdpr/erasure", ('{"a":' * 50_000 + "1" + "}" * 50_000).encode()
        ),
        "deep_struct_in_flow_config": RestCase("POST", "/api/v1/flow/runs", flow_body.encode()),
        "nul_in_body": RestCase(
            "POST", "/api/v1/gdpr/legal-holds", b'{"customerId": "a\\u0000b", "reason": "r"}'
        ),
        "nul_in_struct_key": RestCase(
            "POST",
            "/api/v1/flow/runs",
            b'{"definition": {"nodes": [{"id": "a", "type": "source.inline",'
            b' "config": {"records": [{"k\\u0000": 1}]}}]}}',
        ),
        "nul_in_path": RestCase("GET", f"/api/v1/dsar/{quote(world.dsar_id)}%00"),
        "nul_in_query": RestCase("GET", "/api/v1/audit/events", params={"action": "x\x00"}),
        "bad_utf8_body": RestCase("POST", "/api/v1/gdpr/erasure", b'{"customerId": "\xff\xfe"}'),
        "huge_string_in_body": RestCase(
            "POST", "/api/v1/gdpr/erasure", json.dumps({"customerId": HOSTILE["huge"]}).encode()
        ),
        "sql_in_run_path": RestCase("GET", f"/api/v1/flow/runs/{sql}"),
        "sql_in_dsar_path": RestCase("GET", f"/api/v1/dsar/{sql}", status=(404,)),
        "sql_in_decision_path": RestCase(
            "GET", f"/api/v1/decisions/{sql}/provenance", status=(404,)
        ),
        "sql_in_query": RestCase("GET", "/api/v1/dsar", params={"status": HOSTILE["sql_drop"]}),
        "not_json": RestCase("POST", "/api/v1/dsar", b"requestType=export&subjectId=x"),
        "json_not_object": RestCase("POST", "/api/v1/dsar", b'["export"]'),
    }


CASE_NAMES = sorted(rest_cases(World(tenant="t", marker="m", dsar_id="d")).keys())


@pytest.mark.parametrize("case_name", CASE_NAMES)
async def test_rest_hostile_requests_are_400_or_404_and_change_nothing(
    case_name: str, target: World, ready: Snapshotter, http: tuple[aiohttp.ClientSession, str]
) -> None:
    case = rest_cases(target)[case_name]
    await ready.wait_idle(target.tenant)
    before = await ready.take(target.tenant)
    status, body = await _rest(http, case.method, case.path, target.tenant, case.body, case.params)
    assert status in case.status, (status, body[:300])
    error = json.loads(body)
    assert set(error) == {"code", "message", "details"} and error["code"] in (3, 5)
    assert await ready.take(target.tenant) == before


async def test_rest_bodies_above_the_gateway_limit_are_413(
    app: App, target: World, ready: Snapshotter, http: tuple[aiohttp.ClientSession, str]
) -> None:
    env = {k: v for k, v in app.settings.env.items() if k != "KAIREON_HTTP_PORT"}
    limit = GatewaySettings.from_env(env).max_body_bytes
    before = await ready.take(target.tenant)

    def body(size: int) -> bytes:
        prefix, suffix = b'{"customerId": "', b'"}'
        return prefix + b"x" * (size - len(prefix) - len(suffix)) + suffix

    status, _ = await _rest(http, "POST", "/api/v1/gdpr/erasure", target.tenant, body(limit + 1))
    assert status == 413

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: cut while reading
        data = body(limit + 64 * 1024)
        for start in range(0, len(data), 256 * 1024):
            yield data[start : start + 256 * 1024]

    status, _ = await _rest(http, "POST", "/api/v1/gdpr/erasure", target.tenant, chunked())
    assert status == 413
    # Exactly at the limit the body is read and judged: a 4 MiB customer id is too long.
    status, answer = await _rest(http, "POST", "/api/v1/gdpr/erasure", target.tenant, body(limit))
    assert status == 400 and b"customer_id" in answer
    assert await ready.take(target.tenant) == before


async def test_text_the_database_cannot_store_is_invalid_argument(ready: Snapshotter) -> None:
    """A NUL that reaches PostgreSQL without passing a request-field check fails there;
    that is bad input, not INTERNAL (the real error of a real server, mapped)."""
    with pytest.raises(asyncpg.exceptions.CharacterNotInRepertoireError) as info:
        await ready.con.fetchval("SELECT $1::text", "user\x00name")
    status = status_for(info.value)
    assert status.code == code_pb2.INVALID_ARGUMENT
    assert "UNSTORABLE_TEXT" in str(status.details[0].value)


async def test_a_token_subject_with_a_nul_is_unauthenticated_and_changes_nothing(
    target: World, ready: Snapshotter, channel: grpc.aio.Channel
) -> None:
    """The token's subject becomes the audit row's actor: it must be printable text."""
    await ready.wait_idle(target.tenant)
    before = await ready.take(target.tenant)
    outcome = await call(
        channel,
        BY_NAME["DsarService.CreateDsarRequest"],
        dsar_pb2.CreateDsarRequestRequest(request_type="export", subject_id=target.customer),
        bearer(target.tenant, "admin", sub="user\x00name"),
    )
    assert outcome.code is grpc.StatusCode.UNAUTHENTICATED, outcome.details
    assert await ready.take(target.tenant) == before
