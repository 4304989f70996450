"""StartRun's one-statement insert: the view it returns without reading back is
the one get_run reads, and an existing run id is refused with nothing written."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

from kaireon_server.flow import repository
from kaireon_server.platform.db import Database

AT = datetime(2026, 12, 5, 1, 2, 3, 456789, tzinfo=UTC)
DEFINITION = {
    "name": "chain",
    "nodes": [{"id": "a", "type": "source.inline", "config": {"n": 1.5, "k": [1, "x"]}}],
    "maxConcurrency": 2,
}


async def test_the_returned_view_is_the_stored_run(db: Database, tenant: str) -> None:
    run_id = f"r{secrets.token_hex(4)}"
    nodes = [("a", "source.inline"), ("b", "transform.filter"), ("c", "sink.table")]
    async with db.transaction(tenant) as con:
        made = await repository.insert_run(
            con,
            tenant,
            run_id,
            name="chain",
            definition=DEFINITION,
            digest="d" * 64,
            nodes=nodes,
            started_at=AT,
        )
        stored = await repository.get_run(con, tenant, run_id)
    assert made is not None and made == stored
    assert [n.node_id for n in made.nodes] == ["a", "b", "c"]


async def test_an_existing_run_id_is_refused_and_nothing_changes(db: Database, tenant: str) -> None:
    run_id = f"r{secrets.token_hex(4)}"

    async def insert(name: str, nodes: list[tuple[str, str]]) -> repository.RunView | None:
        async with db.transaction(tenant) as con:
            return await repository.insert_run(
                con,
                tenant,
                run_id,
                name=name,
                definition={},
                digest="",
                nodes=nodes,
                started_at=AT,
            )

    assert await insert("first", [("a", "t")]) is not None
    assert await insert("second", [("x", "t"), ("y", "t")]) is None
    async with db.transaction(tenant) as con:
        stored = await repository.get_run(con, tenant, run_id)
    assert stored is not None and stored.name == "first"
    assert [n.node_id for n in stored.nodes] == ["a"]
    # The same run id in another tenant is another run.
    other = f"t{secrets.token_hex(5)}"
    async with db.transaction(other) as con:
        assert await repository.insert_run(
            con, other, run_id, name="o", definition={}, digest="", nodes=[], started_at=AT
        )
