"""GetNodeOutput: a node's output back as canonical JSON, over gRPC, REST and the CLI."""

from __future__ import annotations

import hashlib
import json

import aiohttp
import grpc
import pytest
import rfc8785

from kaireon.flow.v1 import flow_pb2, flow_pb2_grpc
from kaireon_server.app import App
from tests.cli.support import cli, run
from tests.flow.support import bad_request, definition, wait_finished
from tests.support.server import metadata

RECORDS = [{"name": "b", "n": 1, "ratio": 0.5}, {"n": 5, "name": "a", "nested": {"z": 1, "a": 2}}]


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> flow_pb2_grpc.FlowRunnerServiceStub:
    return flow_pb2_grpc.FlowRunnerServiceStub(channel)


async def _finished_run(stub: flow_pb2_grpc.FlowRunnerServiceStub, tenant: str) -> flow_pb2.Run:
    flow = definition(
        {"id": "src", "type": "source.inline", "config": {"records": RECORDS}},
        {
            "id": "big",
            "type": "transform.filter",
            "dependsOn": ["src"],
            "config": {"where": "n > 2"},
        },
        {
            "id": "never",
            "type": "transform.cast",
            "dependsOn": ["src"],
            "config": {"fields": {"name": "integer"}, "on_error": "fail"},
        },
    )
    await stub.StartRun(
        flow_pb2.StartRunRequest(definition=flow, run_id="out-1"), metadata=metadata(tenant)
    )
    return await wait_finished(stub, tenant, "out-1")


async def _output(stub, tenant: str, node: str, role: str = "operator", **extra):
    return await stub.GetNodeOutput(
        flow_pb2.GetNodeOutputRequest(run_id="out-1", node_id=node, **extra),
        metadata=metadata(tenant, role),
    )


async def test_output_is_canonical_json_with_the_nodes_digest(stub, tenant: str) -> None:
    done = await _finished_run(stub, tenant)
    digests = {n.node_id: n.output_digest for n in done.nodes}
    reply = await _output(stub, tenant, "src")
    assert reply.output_json.encode() == rfc8785.dumps(json.loads(reply.output_json))
    # Integral numbers stay integers: the digest is over exactly these bytes.
    assert json.loads(reply.output_json) == RECORDS
    assert '"n":1,' in reply.output_json and '"nested":{"a":2,"z":1}' in reply.output_json
    assert reply.output_digest == hashlib.sha256(reply.output_json.encode()).hexdigest()
    assert reply.output_digest == digests["src"]
    assert (reply.node_type, reply.size_bytes, reply.truncated) == (
        "source.inline",
        len(reply.output_json.encode()),
        False,
    )
    assert reply.checkpoint_time.seconds > 0
    filtered = await _output(stub, tenant, "big")
    assert json.loads(filtered.output_json) == [RECORDS[1]]


async def test_size_limit_reports_without_cutting(stub, tenant: str) -> None:
    await _finished_run(stub, tenant)
    whole = await _output(stub, tenant, "src")
    small = await _output(stub, tenant, "src", max_bytes=10)
    assert small.truncated and small.output_json == ""
    assert (small.size_bytes, small.output_digest) == (whole.size_bytes, whole.output_digest)
    exact = await _output(stub, tenant, "src", max_bytes=whole.size_bytes)
    assert not exact.truncated and exact.output_json == whole.output_json
    for bad in (-1, 8 * 1024 * 1024 + 1):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await _output(stub, tenant, "src", max_bytes=bad)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert bad_request(refused.value)[0] == [("max_bytes", "must be between 1 and 8388608")]


async def test_refusals(stub, tenant: str) -> None:
    done = await _finished_run(stub, tenant)
    assert {n.node_id for n in done.nodes if n.state == flow_pb2.NODE_STATE_FAILED} == {"never"}
    cases = [
        (tenant, "never", "operator", grpc.StatusCode.FAILED_PRECONDITION, "no stored output"),
        (tenant, "ghost", "operator", grpc.StatusCode.NOT_FOUND, "has no node 'ghost'"),
        (f"{tenant}x", "src", "operator", grpc.StatusCode.NOT_FOUND, "run 'out-1' not found"),
        (tenant, "src", "viewer", grpc.StatusCode.PERMISSION_DENIED, ""),
        (tenant, "bad id!", "operator", grpc.StatusCode.INVALID_ARGUMENT, "node_id"),
        (tenant, "src\n", "operator", grpc.StatusCode.INVALID_ARGUMENT, "node_id"),
        (tenant, "", "operator", grpc.StatusCode.INVALID_ARGUMENT, "node_id: is required"),
    ]
    for who, node, role, code, words in cases:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await _output(stub, who, node, role)
        assert refused.value.code() == code, (node, role)
        assert words in (refused.value.details() or "")
    await stub.ClearCheckpoints(
        flow_pb2.ClearCheckpointsRequest(run_id="out-1"), metadata=metadata(tenant)
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _output(stub, tenant, "src")
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_rest_route(app: App, stub, tenant: str) -> None:
    await _finished_run(stub, tenant)
    url = f"http://127.0.0.1:{app.http_port}/api/v1/flow/runs/out-1/nodes/big/output"
    heads = {"X-Tenant-Id": tenant, "X-User-Role": "operator"}
    async with aiohttp.ClientSession() as http:
        async with http.get(url, headers=heads) as answer:
            assert answer.status == 200, await answer.text()
            body = await answer.json()
        assert json.loads(body["outputJson"]) == [RECORDS[1]]
        assert body["nodeId"] == "big" and body["truncated"] is False
        async with http.get(url + "?maxBytes=5", headers=heads) as answer:
            assert (await answer.json())["truncated"] is True
        async with http.get(url.replace("/big/", "/ghost/"), headers=heads) as answer:
            assert answer.status == 404


@pytest.mark.slow  # the real console script
async def test_cli_prints_writes_and_explains(grpc_target: str, stub, tenant: str, tmp_path):
    await _finished_run(stub, tenant)
    base = cli(grpc_target, tenant, "operator")
    code, out, err = await run(*base, "flow", "output", "out-1", "big")
    assert code == 0, err
    assert json.loads(out) == [RECORDS[1]]
    code, out, err = await run(
        *base, "flow", "output", "out-1", "src", "--out", "src.json", cwd=tmp_path
    )
    assert code == 0, err
    assert out.startswith("output of src (source.inline): ") and "written to src.json" in out
    assert json.loads((tmp_path / "src.json").read_text()) == RECORDS
    code, out, err = await run(*base, "--json", "flow", "output", "out-1", "src")
    assert code == 0, err
    assert json.loads(out)["output"] == RECORDS and '"n": 1,' in out
    code, out, err = await run(*base, "flow", "output", "out-1", "src", "--max-bytes", "10")
    assert code == 1 and out == ""
    assert "is " in err and "more than --max-bytes 10; pass --max-bytes " in err
    code, _, err = await run(*base, "flow", "output", "out-1", "never")
    assert code == 1 and "FAILED_PRECONDITION" in err and "no stored output" in err
    code, _, err = await run(*base, "flow", "output", "no-run", "src")
    assert code == 1 and "NOT_FOUND" in err
