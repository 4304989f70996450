"""`kaireon flow`: the real console script against the session server."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest

# Process-level: each test runs the `kaireon` CLI as a subprocess (slow tier).
pytestmark = pytest.mark.slow
KAIREON = str(Path(sys.executable).parent / "kaireon")

# One node at a time, the first lasting long enough for the CLI's watch to
# begin while the run executes, so the others' progress lines are streamed (a
# run finished before its watch shows its snapshot and its end only).
FLOW_YAML = """
name: cli-demo
max_concurrency: 1
nodes:
  - id: wait
    type: test.step
    config: {sleep: 0.5}
  - id: src
    type: source.inline
    config:
      records:
        - {customer: c1, channel: web}
        - {customer: c2, channel: email}
  - id: web
    type: transform.filter
    depends_on: [src]
    config: {where: "channel == 'web'"}
"""


async def kaireon(
    target: str, tenant: str, *argv: str, role: str = "operator"
) -> tuple[int, str, str]:
    # Asynchronous: the server under test runs in this event loop.
    proc = await asyncio.create_subprocess_exec(
        KAIREON,
        "--target",
        target,
        "--tenant",
        tenant,
        "--role",
        role,
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={k: v for k, v in os.environ.items() if not k.startswith("KAIREON_")},
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_run_yaml_with_progress(grpc_target, tenant, tmp_path: Path) -> None:
    flow = tmp_path / "flow.yaml"
    flow.write_text(FLOW_YAML)
    code, out, err = await kaireon(
        grpc_target, tenant, "flow", "run", str(flow), "--run-id", "cli1"
    )
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("run cli1 (attempt 1): running, ")
    assert any(line.startswith("  [1/3] wait completed") for line in lines)
    assert any(line.startswith("  [2/3] src completed") for line in lines)
    assert any(line.startswith("  [3/3] web completed") for line in lines)
    assert lines[-1] == "run cli1: succeeded"

    code, out, _ = await kaireon(grpc_target, tenant, "flow", "status", "cli1", role="viewer")
    assert code == 0 and out.splitlines()[0] == "run cli1 (attempt 1): succeeded"
    assert "web" in out and "transform.filter" in out and "completed" in out
    code, out, _ = await kaireon(grpc_target, tenant, "flow", "list", role="viewer")
    assert code == 0 and out.split()[0] == "cli1"


async def test_failed_run_then_retry_and_watch(grpc_target, tenant, tmp_path: Path) -> None:
    flag = tmp_path / "fail"
    flag.write_text("")
    flow = tmp_path / "flow.json"
    flow.write_text(
        json.dumps(
            {
                "nodes": [
                    # Lasts while the CLI's watch begins (see FLOW_YAML).
                    {"id": "a", "type": "test.step", "config": {"sleep": 0.5}},
                    {
                        "id": "b",
                        "type": "test.step",
                        "dependsOn": ["a"],
                        "config": {"fail_flag": str(flag)},
                    },
                ]
            }
        )
    )
    code, out, _ = await kaireon(grpc_target, tenant, "flow", "run", str(flow), "--run-id", "cli2")
    assert code == 4
    assert "  [2/2] b FAILED: planned failure (flag file)" in out.splitlines()
    assert out.splitlines()[-1] == "run cli2: failed: node 'b' failed: planned failure (flag file)"

    flag.unlink()
    code, out, err = await kaireon(grpc_target, tenant, "--json", "flow", "retry", "cli2")
    assert code == 0, err
    events = [json.loads(line)["result"] for line in out.splitlines()]
    assert events[0]["type"] == "RUN_EVENT_TYPE_SNAPSHOT"
    assert events[-1]["type"] == "RUN_EVENT_TYPE_RUN_FINISHED"
    assert events[-1]["run"]["state"] == "RUN_STATE_SUCCEEDED" and events[-1]["run"]["attempt"] == 2
    # A two-node retry may end before its watch begins: its nodes are then in the snapshot.
    node_events = [(e["type"], e["nodeId"]) for e in events[1:-1]]
    in_snapshot = {n["nodeId"]: n["state"] for n in events[0]["run"]["nodes"]}
    assert ("RUN_EVENT_TYPE_NODE_SKIPPED", "a") in node_events or in_snapshot["a"] == (
        "NODE_STATE_SKIPPED"
    )
    assert ("RUN_EVENT_TYPE_NODE_COMPLETED", "b") in node_events or in_snapshot["b"] == (
        "NODE_STATE_COMPLETED"
    )

    code, out, _ = await kaireon(grpc_target, tenant, "flow", "watch", "cli2", role="viewer")
    assert code == 0
    assert out.splitlines() == [
        "run cli2 (attempt 2): succeeded, 2/2 nodes done",
        "run cli2: succeeded",
    ]
    code, out, _ = await kaireon(grpc_target, tenant, "flow", "clear", "cli2")
    assert code == 0 and out.strip() == "cleared 2 checkpoints of run cli2"


async def test_bad_files_and_refusals(grpc_target, tenant, tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("nodes: [unclosed")
    code, _, err = await kaireon(grpc_target, tenant, "flow", "run", str(broken))
    assert code == 2 and "is not valid YAML/JSON" in err
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("nodes: [{id: a, type: t}]\nbogus: 1\n")
    code, _, err = await kaireon(grpc_target, tenant, "flow", "run", str(unknown))
    assert code == 2 and "bogus" in err
    invalid = tmp_path / "invalid.yaml"
    invalid.write_text("nodes: [{id: a, type: no.such}]\n")
    code, _, err = await kaireon(grpc_target, tenant, "flow", "run", str(invalid))
    assert code == 1
    assert err.strip() == (
        "kaireon: INVALID_ARGUMENT: definition.nodes[0].type: node 'a': unknown node type 'no.such'"
    )
    code, _, err = await kaireon(grpc_target, tenant, "flow", "watch", "missing")
    assert code == 1 and "NOT_FOUND" in err
