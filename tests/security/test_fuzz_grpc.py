"""Hypothesis-generated requests for every RPC over a real gRPC channel.

For each RPC (discovered from the generated descriptors), requests are built
from the input message's descriptor (strategies.py) and sent with a valid admin
identity of a populated tenant. Every answer must be a deliberate one (never
INTERNAL, UNKNOWN, UNAVAILABLE, DATA_LOSS, a missed deadline, or
RESOURCE_EXHAUSTED below the size limit: support.NOT_DELIBERATE), the server must
stay healthy, and every rejected request (non-OK status) must leave the
database as it was: the tenant's per-table row counts and content digests and
its audit chain head (owner connection), and a bystander tenant entirely.

Deterministic (derandomized, no example database). KAIREON_FUZZ_EXAMPLES
raises the number of examples per RPC for a deeper run (default 50).
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

import grpc
import pytest
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kaireon_server.platform.db import Database
from tests.security.conftest import World, new_tenant, populate
from tests.security.rpcs import BY_NAME, METHOD_NAMES, call
from tests.security.snapshot import Snapshotter
from tests.security.strategies import MessageStrategies
from tests.security.support import NOT_DELIBERATE, assert_healthy, settle
from tests.security.valid_requests import REQUESTS
from tests.support.server import metadata

# Long sweeps: run on the embedded PostgreSQL pass of CI, not again on PostgreSQL 15.
pytestmark = pytest.mark.slow

EXAMPLES = int(os.environ.get("KAIREON_FUZZ_EXAMPLES", "50"))
# method -> status name -> examples; read by the summary test at the end.
STATS: dict[str, Counter[str]] = {}
DB_CHANGES_ON_REJECTION: list[str] = []


@pytest.fixture(scope="module")
async def fuzzed(channel: grpc.aio.Channel, db: Database, database_url: str) -> World:
    return await populate(channel, db, database_url, new_tenant("f"))


@pytest.fixture(scope="module")
async def bystander(channel: grpc.aio.Channel, db: Database, database_url: str) -> World:
    return await populate(channel, db, database_url, new_tenant("y"))


@pytest.fixture(scope="module")
async def ready(snapshots: Snapshotter, fuzzed: World, bystander: World) -> Snapshotter:
    await snapshots.refresh()  # both seeds created ds_* tables
    return snapshots


BYSTANDER_BEFORE: list[Any] = []


@pytest.fixture(scope="module", autouse=True)
async def _bystander_before(ready: Snapshotter, bystander: World) -> None:
    await ready.wait_idle(bystander.tenant)
    BYSTANDER_BEFORE.append(await ready.take(bystander.tenant))


_STRATEGIES: dict[str, st.SearchStrategy[Any]] = {}


def strategy(name: str, world: World) -> st.SearchStrategy[Any]:
    if name not in _STRATEGIES:
        known = [
            world.customer,
            world.held_customer,
            world.decision,
            world.dsar_id,
            world.idempotency_key,
            world.run_id,
            world.audit_page_token,
            "dec_00002_3",
            "cust_00003",
        ]
        generated = MessageStrategies(known).message(BY_NAME[name].input_type)
        seed = REQUESTS[name](world)
        # Half from scratch, half a valid request with generated fields merged in.
        _STRATEGIES[name] = st.one_of(generated, generated.map(lambda g: _merged(seed, g)))
    return _STRATEGIES[name]


def _merged(seed: Message, generated: Message) -> Message:
    message = type(seed)()
    message.CopyFrom(seed)
    message.MergeFrom(generated)
    return message


@pytest.mark.parametrize("name", METHOD_NAMES)
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
@given(data=st.data())
async def test_generated_requests_get_deliberate_answers_and_rejections_change_nothing(
    name: str,
    data: st.DataObject,
    fuzzed: World,
    bystander: World,
    ready: Snapshotter,
    channel: grpc.aio.Channel,
) -> None:
    request = data.draw(strategy(name, fuzzed), label="request")
    await ready.wait_idle(fuzzed.tenant)
    before = await ready.take(fuzzed.tenant)
    outcome = await call(
        channel, BY_NAME[name], request, metadata(fuzzed.tenant, "admin"), timeout=30
    )
    STATS.setdefault(name, Counter())[outcome.code.name] += 1
    assert outcome.code not in NOT_DELIBERATE, (outcome.code, outcome.details)
    if outcome.ok:
        await settle(channel, ready, fuzzed)
    else:
        after = await ready.take(fuzzed.tenant)
        if after != before:
            DB_CHANGES_ON_REJECTION.append(name)
        assert after == before, (outcome.code, outcome.details, before.changed_tables(after))
    await assert_healthy(channel)


async def test_summary_every_rpc_was_fuzzed_and_no_bystander_row_changed(
    bystander: World, ready: Snapshotter, channel: grpc.aio.Channel
) -> None:
    assert sorted(STATS) == sorted(METHOD_NAMES), "run the whole file: every RPC is fuzzed"
    total = sum(sum(c.values()) for c in STATS.values())
    rejected = sum(n for c in STATS.values() for code, n in c.items() if code != "OK")
    lines = [f"{name}: {dict(STATS[name])}" for name in sorted(STATS)]
    print(
        f"\nfuzzed {len(STATS)} RPCs, {total} requests, {rejected} rejected, "
        f"DB changes on rejection: {len(DB_CHANGES_ON_REJECTION)}\n" + "\n".join(lines)
    )
    assert not DB_CHANGES_ON_REJECTION
    # Another populated tenant: not one row of it changed during all of the above.
    assert await ready.take(bystander.tenant) == BYSTANDER_BEFORE[0]
    await assert_healthy(channel)
