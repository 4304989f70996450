"""The bundle cache: catalogue only, keyed by content, so nothing it holds can outlive
the database: erasure and in-place edits show on every server at once."""

from __future__ import annotations

import grpc
import pytest

from kaireon.erasure.v1 import erasure_pb2, erasure_pb2_grpc
from kaireon_server.platform.build_identity import BuildEnv
from kaireon_server.platform.lru import Lru
from kaireon_server.provenance.bundle import encode_rows
from kaireon_server.provenance.cache import BundleCache
from kaireon_server.provenance.emit import read_rows
from tests.provenance.conftest import AFTER_CHANGE, BEFORE_CHANGE, fetch, running_app
from tests.provenance.reference import reference_body, reference_sources
from tests.support.server import metadata


async def _customer_of(db, tenant: str, decision_id: str) -> str:
    async with db.transaction(tenant) as con:
        customer: str = await con.fetchval(
            "SELECT customer_id FROM decision_trace WHERE tenant_id = $1 AND id = $2",
            tenant,
            decision_id,
        )
    return customer


async def test_an_erased_decision_is_not_found_on_every_server_at_once(
    channel, seeded, db, server_env
):
    customer = await _customer_of(db, seeded, AFTER_CHANGE)
    async with running_app(server_env) as other:
        # Both servers have served (and cached from) the decision.
        for ch in (channel, other):
            await fetch(ch, seeded, AFTER_CHANGE)
        erasure = erasure_pb2_grpc.ErasureServiceStub(channel)
        await erasure.EraseCustomer(
            erasure_pb2.EraseCustomerRequest(customer_id=customer), metadata=metadata(seeded)
        )
        for ch in (channel, other):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await fetch(ch, seeded, AFTER_CHANGE)
            assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        # Another customer's decision is still served, from the same catalogue.
        assert await _customer_of(db, seeded, "dec_00002_3") != customer
        assert (await fetch(other, seeded, "dec_00002_3")).digest


async def test_a_catalogue_row_edited_in_place_shows_on_every_server_at_once(
    channel, seeded, db, server_env
):
    async with running_app(server_env) as other:
        before = [await fetch(ch, seeded, AFTER_CHANGE) for ch in (channel, other)]
        async with db.transaction(seeded) as con:
            await con.execute(
                'UPDATE rule SET expression = \'{"attribute": "edited"}\' '
                "WHERE tenant_id = $1 AND rule_id = 'rule_global_optin'",
                seeded,
            )
            await con.execute(
                "UPDATE ml_model SET state = jsonb_set(state, '{bias}', '0.75') "
                "WHERE tenant_id = $1 AND model_id = 'model_uplift' AND version = 2",
                seeded,
            )
        after = [await fetch(ch, seeded, AFTER_CHANGE) for ch in (channel, other)]
    sources = await reference_sources(db, seeded, AFTER_CHANGE)
    assert sources is not None
    expected = reference_body(sources, BuildEnv.from_env(server_env))
    assert before[0].body == before[1].body != expected
    assert after[0].body == after[1].body == expected
    assert b'"edited"' in expected


async def test_the_cache_holds_no_customer_data(db, seeded):
    planted = "planted-personal-value-4711"
    async with db.transaction(seeded) as con:
        await con.execute(
            "UPDATE decision_trace SET attributes = attributes || "
            "jsonb_build_object('note', $2::text, 'email', $2::text) WHERE tenant_id = $1",
            seeded,
            planted,
        )
        customers = [
            r["customer_id"]
            for r in await con.fetch(
                "SELECT DISTINCT customer_id FROM decision_trace WHERE tenant_id = $1", seeded
            )
        ]
    cache = BundleCache()
    build = BuildEnv.from_env({})
    offers: set[str] = set()
    for decision_id in (BEFORE_CHANGE, AFTER_CHANGE, "dec_00002_2"):
        rows, models = await read_rows(db, seeded, decision_id, cache)
        encode_rows(seeded, rows, models, build, cache)
        offers |= {offer.offer_id for offer in rows.offers}
    held = repr(list(cache.fragments._entries.items())) + repr(
        list(cache.model_hashes._entries.items())
    )
    assert len(cache.fragments) and len(cache.model_hashes)
    # It does hold the catalogue: the offers these decisions cite (which ones
    # depends on the tenant's seed).
    assert offers and all(offer in held for offer in offers), offers
    for value in (planted, *customers, BEFORE_CHANGE, AFTER_CHANGE):
        assert value not in held


async def test_a_served_bundle_comes_from_the_cache_the_second_time(db, seeded):
    cache = BundleCache()
    build = BuildEnv.from_env({})
    bodies = []
    for _ in range(2):
        rows, models = await read_rows(db, seeded, AFTER_CHANGE, cache)
        bodies.append(encode_rows(seeded, rows, models, build, cache).body)
    assert bodies[0] == bodies[1]
    assert cache.fragments.hits == cache.fragments.misses == len(rows.offers) > 0
    assert cache.model_hashes.hits == cache.model_hashes.misses == len(models) == 2
    # Another tenant with the very same catalogue does not share the entries.
    rows, models = await read_rows(db, seeded, AFTER_CHANGE, cache)
    encode_rows(seeded + "other", rows, models, build, cache)
    assert cache.fragments.misses == 2 * len(rows.offers)


def test_lru_evicts_the_least_recently_used_past_its_weight() -> None:
    lru: Lru[str, bytes] = Lru(10, lambda _k, v: len(v))
    lru.put("a", b"1234")
    lru.put("b", b"1234")
    assert lru.get("a") == b"1234"  # a is now the most recent
    lru.put("c", b"1234")  # 12 > 10: b goes
    assert lru.get("b") is None
    assert lru.get("a") == lru.get("c") == b"1234"
    assert lru.total_weight == 8 and len(lru) == 2
    lru.put("huge", b"x" * 11)  # larger than the whole cache: not kept, nothing evicted
    assert lru.get("huge") is None and len(lru) == 2
    lru.put("a", b"12")  # replacing an entry re-weighs it
    assert lru.total_weight == 6
