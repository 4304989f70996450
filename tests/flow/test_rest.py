"""FlowRunnerService over REST: the routes the gateway derives from flow.proto."""

from __future__ import annotations

import json

import aiohttp
import pytest

from kaireon_server.app import App


@pytest.fixture
def base(app: App) -> str:
    assert app.http_port, "the session server serves REST"
    return f"http://127.0.0.1:{app.http_port}/api/v1/flow/runs"


def headers(tenant: str, role: str = "operator") -> dict[str, str]:
    return {"X-Tenant-Id": tenant, "X-User-Role": role}


DEFINITION = {
    "name": "rest",
    "nodes": [
        {"id": "src", "type": "source.inline", "config": {"records": [{"n": 1}, {"n": 5}]}},
        {
            "id": "big",
            "type": "transform.filter",
            "dependsOn": ["src"],
            "config": {"where": "n > 2"},
        },
    ],
}


async def test_start_watch_get_list(base: str, tenant: str) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(
            base, json={"definition": DEFINITION, "runId": "rest1"}, headers=headers(tenant)
        ) as r:
            assert r.status == 200
            started = await r.json()
        assert started["run"]["runId"] == "rest1" and started["run"]["state"] == "RUN_STATE_RUNNING"

        async with http.get(f"{base}/rest1/watch", headers=headers(tenant, "viewer")) as r:
            assert r.status == 200
            lines = [json.loads(line) for line in (await r.text()).splitlines() if line]
        assert lines[0]["result"]["type"] == "RUN_EVENT_TYPE_SNAPSHOT"
        assert lines[-1]["result"]["type"] == "RUN_EVENT_TYPE_RUN_FINISHED"

        # GetRun answers the run itself (response_body: "run").
        async with http.get(f"{base}/rest1", headers=headers(tenant, "viewer")) as r:
            run = await r.json()
        assert run["state"] == "RUN_STATE_SUCCEEDED"
        assert [n["state"] for n in run["nodes"]] == [
            "NODE_STATE_COMPLETED",
            "NODE_STATE_COMPLETED",
        ]

        async with http.get(base, params={"pageSize": "5"}, headers=headers(tenant, "viewer")) as r:
            listed = await r.json()
        assert [x["runId"] for x in listed["runs"]] == ["rest1"]

        async with http.post(
            f"{base}/rest1:clearCheckpoints", json={}, headers=headers(tenant)
        ) as r:
            assert (await r.json()) == {"cleared": 2}
        slow = {
            "nodes": [
                *DEFINITION["nodes"],
                {"id": "slow", "type": "test.step", "config": {"sleep": 30}},
            ]
        }
        async with http.post(
            f"{base}/rest1:retry", json={"definition": slow}, headers=headers(tenant)
        ) as r:
            assert (await r.json())["run"]["attempt"] == 2
        async with http.post(f"{base}/rest1:cancel", json={}, headers=headers(tenant)) as r:
            assert r.status == 200
            assert (await r.json())["run"]["state"] == "RUN_STATE_CANCELLED"
        async with http.post(f"{base}/rest1:cancel", json={}, headers=headers(tenant)) as r:
            assert r.status == 400  # FAILED_PRECONDITION, as grpc-gateway maps it


async def test_errors_as_google_rpc_status(base: str, tenant: str) -> None:
    bad = {"nodes": [{"id": "a", "type": "no.such"}]}
    async with aiohttp.ClientSession() as http:
        async with http.post(base, json={"definition": bad}, headers=headers(tenant)) as r:
            assert r.status == 400
            status = await r.json()
        assert status["code"] == 3
        violations = next(d for d in status["details"] if d["@type"].endswith("BadRequest"))
        assert violations["fieldViolations"][0]["field"] == "definition.nodes[0].type"
        async with http.get(f"{base}/missing", headers=headers(tenant, "viewer")) as r:
            assert r.status == 404


def _body(definition: str = json.dumps(DEFINITION), extra: str = "") -> bytes:
    return f'{{"definition": {definition}{extra}}}'.encode()


BAD_STARTS = {
    "misspelled-field": (b'{"defintion": ' + json.dumps(DEFINITION).encode() + b"}", 400),
    "definition-twice": (_body(extra=', "definition": ' + json.dumps(DEFINITION)), 400),
    "nan": (_body(json.dumps(DEFINITION).replace('"n": 1', '"n": NaN')), 400),
    "huge-number": (
        _body(
            json.dumps({**DEFINITION, "maxConcurrency": 1}).replace(
                '"maxConcurrency": 1', '"maxConcurrency": 1e400'
            )
        ),
        400,
    ),
    "run-id-trailing-newline": (_body(extra=', "runId": "r\\n"'), 400),
}


@pytest.mark.parametrize("case", sorted(BAD_STARTS))
async def test_a_bad_start_is_4xx_every_time_and_writes_nothing(
    base: str, app: App, tenant: str, case: str
) -> None:
    """Each class of bad StartRun input, twice (StartRun keeps converted
    definitions): the same 4xx both times, no run, no audit row."""
    body, status = BAD_STARTS[case]
    async with aiohttp.ClientSession() as http:
        for _ in range(2):
            sent = {**headers(tenant), "Content-Type": "application/json"}
            async with http.post(base, data=body, headers=sent) as r:
                assert r.status == status, await r.text()
    assert app.db is not None
    async with app.db.transaction(tenant, readonly=True) as con:
        assert await con.fetchval("SELECT count(*) FROM flow_run") == 0
        assert await con.fetchval("SELECT count(*) FROM audit_log") == 0


async def test_a_start_naming_two_tenants_is_refused_and_writes_nothing(
    base: str, app: App, tenant: str
) -> None:
    """The identity header sent twice, the second another tenant's."""
    other = f"{tenant}x"
    sent = [("X-Tenant-Id", tenant), ("X-Tenant-Id", other), ("X-User-Role", "operator")]
    async with aiohttp.ClientSession() as http:
        async with http.post(base, json={"definition": DEFINITION}, headers=sent) as r:
            assert r.status == 401, await r.text()
    assert app.db is not None
    for each in (tenant, other):
        async with app.db.transaction(each, readonly=True) as con:
            assert await con.fetchval("SELECT count(*) FROM flow_run") == 0
