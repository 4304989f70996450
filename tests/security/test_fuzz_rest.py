"""Hypothesis-generated REST requests, and gRPC requests with non-finite numbers, against a real server.

REST: for every RPC, a request is generated as a protobuf message (strategies.py,
half of them merged into a valid request), turned into the HTTP request its
google.api.http rule describes (rest.py), then mutated: unknown and misspelled
keys, duplicate keys (also a field under its JSON and proto names), NaN,
Infinity, 1e400 and 400-digit integers, values of the wrong JSON type, anywhere
in the body (nested objects and Structs included), and random query
parameters; through the server's gateway (strict, the default) and a lenient
one (KAIREON_GATEWAY_STRICT_JSON=false) in front of the same server. gRPC: StartRun / RetryRun requests whose Structs and double fields
carry NaN, infinities and extreme finite numbers.

Properties: no answer is a server fault (HTTP 5xx; gRPC INTERNAL, UNKNOWN, ...:
support.NOT_DELIBERATE); a refused request leaves the tenant's rows and audit
chain head exactly as they were; a request holding a non-finite number is
always refused (400 / INVALID_ARGUMENT).

Deterministic (derandomized, no example database). KAIREON_FUZZ_REST_EXAMPLES
sets the examples per RPC and gateway mode (default 6: the whole file runs in
about 30 s).
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import grpc
import pytest
from google.protobuf import json_format
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kaireon.flow.v1 import flow_pb2
from kaireon_server.app import App
from kaireon_server.gateway import DEFAULT_SERVICES, GatewayServer, GatewaySettings
from kaireon_server.platform.db import Database
from kaireon_server.platform.input_checks import find_non_finite
from tests.security.conftest import World, new_tenant, populate
from tests.security.rest import to_http
from tests.security.rpcs import BY_NAME, METHOD_NAMES, call
from tests.security.snapshot import Snapshotter
from tests.security.strategies import MessageStrategies
from tests.security.support import NOT_DELIBERATE, assert_healthy, settle
from tests.security.valid_requests import REQUESTS
from tests.support.server import metadata

EXAMPLES = int(os.environ.get("KAIREON_FUZZ_REST_EXAMPLES", "6"))
FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
STATS: Counter[str] = Counter()


@pytest.fixture(scope="module")
async def world(channel: grpc.aio.Channel, db: Database, database_url: str) -> World:
    return await populate(channel, db, database_url, new_tenant("r"))


@pytest.fixture(scope="module")
async def ready(snapshots: Snapshotter, world: World) -> Snapshotter:
    await snapshots.refresh()
    return snapshots


@pytest.fixture(scope="module")
async def http(
    app: App, grpc_target: str
) -> AsyncIterator[tuple[aiohttp.ClientSession, dict[str, str]]]:
    """The server's own gateway (strict, the default) and a lenient one in front of it."""
    lenient = GatewayServer(grpc_target, list(DEFAULT_SERVICES), GatewaySettings(strict_json=False))
    await lenient.start("127.0.0.1", 0)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        yield (
            session,
            {
                "strict": f"http://127.0.0.1:{app.http_port}",
                "lenient": f"http://127.0.0.1:{lenient.port}",
            },
        )
    await lenient.stop()


# --- JSON with what json.dumps cannot write ---------------------------------------


class Obj(list[tuple[str, Any]]):
    """A JSON object as its key/value pairs: keys may repeat."""


class Raw(str):
    """JSON text written as is (NaN, Infinity, 1e400, huge integers)."""


ODD_NUMBERS = [
    Raw("NaN"),
    Raw("Infinity"),
    Raw("-Infinity"),
    Raw("1e400"),
    Raw("-1e999"),
    Raw("9" * 400),
    "NaN",
    "Infinity",
    "-Infinity",
    1.7976931348623157e308,
    -5e-324,
    2**63,
    -(2**63) - 1,
    2**64,
]
NON_FINITE_TEXT = {"NaN", "Infinity", "-Infinity", "1e400", "-1e999", "9" * 400}


def to_obj(value: Any) -> Any:
    if isinstance(value, dict):
        return Obj((k, to_obj(v)) for k, v in value.items())
    if isinstance(value, list):
        return [to_obj(v) for v in value]
    return value


def render(value: Any) -> str:
    if isinstance(value, Obj):
        return "{" + ",".join(f"{json.dumps(k)}:{render(v)}" for k, v in value) + "}"
    if isinstance(value, list):
        return "[" + ",".join(render(v) for v in value) + "]"
    if isinstance(value, Raw):
        return str(value)
    return json.dumps(value)


def objects(value: Any) -> list[Obj]:
    """Every object in the document, outermost first."""
    found: list[Obj] = []
    if isinstance(value, Obj):
        found.append(value)
        for _, item in value:
            found += objects(item)
    elif isinstance(value, list):
        for item in value:
            found += objects(item)
    return found


def holds_non_finite(value: Any) -> bool:
    if isinstance(value, Raw):
        return str(value) in NON_FINITE_TEXT
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, Obj):
        return any(holds_non_finite(v) for _, v in value)
    if isinstance(value, list):
        return any(holds_non_finite(v) for v in value)
    return False


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name)


WRONG_TYPES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
    st.lists(st.integers(), max_size=2),
    st.builds(lambda: Obj([("x", 1)])),  # a fresh object each draw: edits may nest into it
)


@st.composite
def mutate(draw: st.DrawFn, doc: Any) -> Any:
    """Applies 1-4 hostile edits to objects anywhere in the document."""
    doc = to_obj(doc)
    if not isinstance(doc, Obj):
        doc = Obj()
    for _ in range(draw(st.integers(1, 4))):
        targets = objects(doc)
        target = targets[draw(st.integers(0, len(targets) - 1))]
        kind = draw(st.sampled_from(["unknown", "dup", "alias", "number", "wrong_type"]))
        keys = [k for k, _ in target]
        if kind == "unknown" or not keys:
            key = draw(
                st.one_of(
                    st.sampled_from(["dryrun", "dry-run", "DryRun", "customerID", "runid", "x"]),
                    st.text(max_size=12),
                )
            )
            target.append((key, draw(st.one_of(WRONG_TYPES, st.sampled_from(ODD_NUMBERS)))))
        elif kind == "dup":
            target.append((draw(st.sampled_from(keys)), draw(WRONG_TYPES)))
        elif kind == "alias":
            key = draw(st.sampled_from(keys))
            other = _snake(key) if key != _snake(key) else _camel(key)
            target.append((other, draw(st.one_of(WRONG_TYPES, st.just(True), st.just(False)))))
        else:
            index = draw(st.integers(0, len(target) - 1))
            values = st.sampled_from(ODD_NUMBERS) if kind == "number" else WRONG_TYPES
            target[index] = (target[index][0], draw(values))
    return doc


QUERY_KEYS = st.one_of(
    st.sampled_from(
        ["pageSize", "page_size", "pageToken", "status", "subjectId", "action", "state", "dryRun"]
    ),
    st.text(min_size=1, max_size=10),
)
QUERY_VALUES = st.one_of(
    st.sampled_from(["NaN", "1e400", "-1", "9" * 30, "true", "", "RUN_STATE_FAILED"]),
    st.text(max_size=12),
)


def known_ids(world: World) -> list[str]:
    return [
        world.customer,
        world.held_customer,
        world.decision,
        world.dsar_id,
        world.run_id,
        world.audit_page_token,
    ]


_STRATEGIES: dict[str, st.SearchStrategy[Any]] = {}


def rest_requests(name: str, world: World) -> st.SearchStrategy[Any]:
    """(verb, path, query pairs, body bytes or None, body document or None)."""
    if name not in _STRATEGIES:
        method = BY_NAME[name]
        generated = MessageStrategies(known_ids(world), max_depth=3).message(method.input_type)
        seed = REQUESTS[name](world)

        def merged(message: Message) -> Message:
            copy = type(seed)()
            copy.CopyFrom(seed)
            copy.MergeFrom(message)
            return copy

        messages = st.one_of(st.just(seed), generated, generated.map(merged))

        @st.composite
        def build(draw: st.DrawFn) -> Any:
            message = draw(messages)
            try:
                shaped = to_http(method, message)
            except (ValueError, AssertionError, json_format.Error):
                shaped = to_http(method, seed)  # a map in a GET, a NaN Struct: no HTTP form
            extra = draw(st.lists(st.tuples(QUERY_KEYS, QUERY_VALUES), max_size=3))
            body_doc = None
            if shaped.body is not None:
                body_doc = draw(mutate(json.loads(shaped.body)))
            body = render(body_doc).encode() if body_doc is not None else None
            return shaped.method, shaped.path, shaped.query + extra, body, body_doc

        _STRATEGIES[name] = build()
    return _STRATEGIES[name]


def _headers(tenant: str) -> dict[str, str]:
    return {"X-Tenant-Id": tenant, "X-User-Role": "admin", "Content-Type": "application/json"}


# Streams over REST are long-lived by design (a watch ends with its run); the
# gRPC fuzzer covers their inputs.
REST_NAMES = [n for n in METHOD_NAMES if not BY_NAME[n].server_streaming]


@pytest.mark.parametrize("name", REST_NAMES)
@pytest.mark.parametrize("mode", ["strict", "lenient"])
@FUZZ_SETTINGS
@given(data=st.data())
async def test_generated_rest_requests_never_fail_the_server_and_refusals_change_nothing(
    mode: str,
    name: str,
    data: st.DataObject,
    world: World,
    ready: Snapshotter,
    channel: grpc.aio.Channel,
    http: tuple[aiohttp.ClientSession, dict[str, str]],
) -> None:
    verb, path, query, body, doc = data.draw(rest_requests(name, world), label="request")
    session, bases = http
    base = bases[mode]
    await ready.wait_idle(world.tenant)
    before = await ready.take(world.tenant)
    async with session.request(
        verb, base + path, params=query, data=body, headers=_headers(world.tenant)
    ) as response:
        status, text = response.status, await response.text()
        is_json = response.content_type == "application/json"
    STATS[f"{name} {mode} {status}"] += 1
    assert status < 500, (status, text[:500])
    if doc is not None and holds_non_finite(doc):
        assert status == 400, (status, text[:500])
    if status >= 400:
        # aiohttp's own HTTP parser limits (a request line beyond 8 KiB) answer in plain text.
        assert is_json or status in (400, 413, 414, 431), (status, text[:300])
        if is_json:
            assert set(json.loads(text)) == {"code", "message", "details"}, text[:300]
        after = await ready.take(world.tenant)
        assert after == before, (status, text[:300], before.changed_tables(after))
    else:
        await settle(channel, ready, world)


NUMBERS = st.one_of(
    st.sampled_from([math.nan, math.inf, -math.inf]),
    st.sampled_from([1.7976931348623157e308, -5e-324, 0.0, -0.0, 2.0**63]),
    st.floats(),
)


@st.composite
def flow_requests(draw: st.DrawFn, world: World, name: str) -> Message:
    """A StartRun / RetryRun request whose Structs and doubles carry odd numbers."""
    seed = REQUESTS["FlowRunnerService.StartRun"](world)
    definition = flow_pb2.FlowDefinition()
    definition.CopyFrom(seed.definition)  # type: ignore[attr-defined]
    generated = MessageStrategies(known_ids(world), max_depth=3).message(
        flow_pb2.FlowDefinition.DESCRIPTOR
    )
    definition.MergeFrom(draw(generated))
    for _ in range(draw(st.integers(1, 3))):
        node = definition.nodes[draw(st.integers(0, len(definition.nodes) - 1))]
        where = draw(st.sampled_from(["config", "nested", "list", "timeout", "retry"]))
        number = draw(NUMBERS)
        if where == "config":
            node.config[draw(st.sampled_from(["n", "records", "where"]))] = number
        elif where == "nested":
            node.config["records"] = [{"n": number, "k": "v"}]
        elif where == "list":
            node.config["fields"] = [1, [number], {"x": number}]
        elif where == "timeout":
            node.timeout_seconds = number
        else:
            node.retry.backoff_multiplier = number
    if name == "FlowRunnerService.StartRun":
        return flow_pb2.StartRunRequest(
            definition=definition, run_id=draw(st.sampled_from(["", "fz-1"]))
        )
    return flow_pb2.RetryRunRequest(run_id=world.run_id, definition=definition)


@pytest.mark.parametrize("name", ["FlowRunnerService.StartRun", "FlowRunnerService.RetryRun"])
@FUZZ_SETTINGS
@given(data=st.data())
async def test_grpc_non_finite_numbers_are_invalid_argument_and_change_nothing(
    name: str,
    data: st.DataObject,
    world: World,
    ready: Snapshotter,
    channel: grpc.aio.Channel,
) -> None:
    request = data.draw(flow_requests(world, name), label="request")
    await ready.wait_idle(world.tenant)
    before = await ready.take(world.tenant)
    outcome = await call(channel, BY_NAME[name], request, metadata(world.tenant, "admin"))
    STATS[f"{name} {outcome.code.name}"] += 1
    assert outcome.code not in NOT_DELIBERATE, (outcome.code, outcome.details)
    if find_non_finite(request) is not None:
        assert outcome.code is grpc.StatusCode.INVALID_ARGUMENT, outcome.details
    if outcome.ok:
        await settle(channel, ready, world)
    else:
        after = await ready.take(world.tenant)
        assert after == before, (outcome.code, outcome.details, before.changed_tables(after))


async def test_summary_and_server_still_healthy(channel: grpc.aio.Channel) -> None:
    print("\n" + "\n".join(f"{key}: {n}" for key, n in sorted(STATS.items())))
    assert STATS, "run the whole file"
    await assert_healthy(channel)
