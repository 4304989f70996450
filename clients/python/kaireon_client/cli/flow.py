"""`kaireon flow run|retry|watch|status|list|output|cancel|clear`: resumable pipeline runs.

A flow file (YAML or JSON) holds a FlowDefinition in its protojson form:

    name: nightly-export
    nodes:
      - id: customers
        type: source.sql
        config: {query: "SELECT customer_id, channel FROM interaction_history"}
      - id: web
        type: transform.filter
        dependsOn: [customers]          # depends_on works too
        config: {where: "channel == 'web'"}

`output RUN NODE` prints a node's output as canonical JSON (GetNodeOutput),
`--out FILE` writes it to FILE; an output over --max-bytes exits 1 and says
how large it is.

`run` and `retry` follow the run until it finishes (unless --no-watch),
printing one line per node event; with --json they print the events as JSON
lines instead. Exit status: 0 when the run succeeded, 4 when it failed or was
cancelled, 1 when the server refused the request, 2 for a bad flow file.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml
from google.protobuf import json_format

from kaireon.flow.v1 import flow_pb2
from kaireon_client import strict_json
from kaireon_client.cli.common import EXIT_RPC_ERROR, dumps_json, message_to_dict, print_json
from kaireon_client.client import KaireonClient

EXIT_BAD_FILE = 2
EXIT_RUN_NOT_SUCCEEDED = 4
# GetNodeOutput's max_bytes bound (protos/kaireon/flow/v1/flow.proto).
OUTPUT_LIMIT_BYTES = 8 * 1024 * 1024

_EVENT_WORDS = {
    flow_pb2.RUN_EVENT_TYPE_NODE_STARTED: "started",
    flow_pb2.RUN_EVENT_TYPE_NODE_COMPLETED: "completed",
    flow_pb2.RUN_EVENT_TYPE_NODE_SKIPPED: "skipped (checkpoint)",
    flow_pb2.RUN_EVENT_TYPE_NODE_FAILED: "FAILED",
}
_DONE_STATES = {
    flow_pb2.NODE_STATE_COMPLETED,
    flow_pb2.NODE_STATE_SKIPPED,
    flow_pb2.NODE_STATE_FAILED,
}


class FlowFileError(Exception):
    pass


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("flow", help="run, retry and watch resumable pipeline runs")
    commands = parser.add_subparsers(dest="flow_command", metavar="SUBCOMMAND", required=True)

    run = commands.add_parser("run", help="start a run of a flow file (YAML or JSON)")
    run.add_argument("file", help="flow definition file (.yaml, .yml or .json; '-' for stdin)")
    run.add_argument("--run-id", default="", help="run identifier (generated when omitted)")
    run.add_argument("--no-watch", action="store_true", help="return once the run has started")
    run.set_defaults(func=_run)

    retry = commands.add_parser("retry", help="retry a run; completed nodes are reused")
    retry.add_argument("run_id")
    retry.add_argument("--file", help="a revised definition to run instead of the stored one")
    retry.add_argument("--no-watch", action="store_true", help="return once the run has restarted")
    retry.set_defaults(func=_retry)

    watch = commands.add_parser("watch", help="follow a run until it finishes")
    watch.add_argument("run_id")
    watch.set_defaults(func=_watch)

    status = commands.add_parser("status", help="show a run and its nodes")
    status.add_argument("run_id")
    status.set_defaults(func=_status)

    listing = commands.add_parser("list", help="list runs, newest first")
    listing.add_argument("--limit", type=int, default=50, help="runs to print (default 50)")
    listing.set_defaults(func=_list)

    cancel = commands.add_parser("cancel", help="cancel a running run")
    cancel.add_argument("run_id")
    cancel.set_defaults(func=_cancel)

    output = commands.add_parser(
        "output", help="print one node's output (canonical JSON, from its checkpoint; operator)"
    )
    output.add_argument("run_id")
    output.add_argument("node_id")
    output.add_argument(
        "--max-bytes",
        type=int,
        default=0,
        help=f"largest output to fetch (default 1 MiB, at most {OUTPUT_LIMIT_BYTES})",
    )
    output.add_argument("--out", type=Path, metavar="FILE", help="write the output to FILE")
    output.set_defaults(func=_output)

    clear = commands.add_parser("clear", help="delete a run's checkpoints (next retry runs all)")
    clear.add_argument("run_id")
    clear.set_defaults(func=_clear)


class _StrictYamlLoader(yaml.SafeLoader):
    """safe_load that also refuses a key twice in one mapping (YAML says keys are
    unique; PyYAML keeps the last) and aliases (a few lines of `*ref` expand to
    gigabytes; a flow file has no use for them)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
            raise yaml.composer.ComposerError(None, None, "aliases are not allowed", mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: list[Any] = []
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.append(key)
        return super().construct_mapping(node, deep=deep)


def load_definition(path: str) -> flow_pb2.FlowDefinition:
    """Parse a flow file strictly: JSON or YAML (no Python objects, no key twice)."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as exc:
        raise FlowFileError(f"cannot read {path}: {exc.strerror}") from None
    try:
        # YAML is a superset of JSON: anything but .json goes to the YAML parser.
        data = (
            strict_json.loads(text)
            if path.endswith(".json")
            else yaml.load(text, Loader=_StrictYamlLoader)  # noqa: S506 - a SafeLoader
        )
    except (ValueError, yaml.YAMLError) as exc:
        raise FlowFileError(f"{path} is not valid YAML/JSON: {exc}") from None
    if not isinstance(data, dict):
        raise FlowFileError(f"{path}: a flow file holds one object with a 'nodes' list")
    try:
        return json_format.ParseDict(data, flow_pb2.FlowDefinition())
    except json_format.ParseError as exc:
        raise FlowFileError(f"{path}: {exc}") from None


def _state(value: flow_pb2.RunState.ValueType) -> str:
    return flow_pb2.RunState.Name(value).removeprefix("RUN_STATE_").lower()


def _node_state(value: flow_pb2.NodeState.ValueType) -> str:
    return flow_pb2.NodeState.Name(value).removeprefix("NODE_STATE_").lower()


def _duration(status: flow_pb2.NodeStatus) -> str:
    if not status.HasField("start_time") or not status.HasField("end_time"):
        return ""
    millis = (status.end_time.ToNanoseconds() - status.start_time.ToNanoseconds()) // 1_000_000
    return f" {millis} ms"


def follow(client: KaireonClient, run_id: str, *, as_json: bool) -> int:
    """Stream the run's events with progress until it finishes; the exit status."""
    total, done = 0, 0
    final: flow_pb2.Run | None = None
    for event in client.flow.WatchRun(flow_pb2.WatchRunRequest(run_id=run_id)):
        if as_json:
            print(dumps_json({"result": message_to_dict(event)}, indent=None), flush=True)
        if event.type == flow_pb2.RUN_EVENT_TYPE_SNAPSHOT:
            total = len(event.run.nodes)
            done = sum(1 for n in event.run.nodes if n.state in _DONE_STATES)
            final = event.run
            if not as_json:
                print(
                    f"run {run_id} (attempt {event.run.attempt}): {_state(event.run.state)}, "
                    f"{done}/{total} nodes done",
                    flush=True,
                )
        elif event.type == flow_pb2.RUN_EVENT_TYPE_RUN_FINISHED:
            final = event.run
        elif not as_json:
            if event.node.state in _DONE_STATES:
                done += 1
            word = _EVENT_WORDS.get(event.type, "?")
            detail = f": {event.error}" if event.error else _duration(event.node)
            print(f"  [{done}/{total}] {event.node_id} {word}{detail}", flush=True)
    if final is None:
        return EXIT_RUN_NOT_SUCCEEDED
    if not as_json:
        suffix = f": {final.error}" if final.error else ""
        print(f"run {run_id}: {_state(final.state)}{suffix}", flush=True)
    return 0 if final.state == flow_pb2.RUN_STATE_SUCCEEDED else EXIT_RUN_NOT_SUCCEEDED


def _started(args: argparse.Namespace, client: KaireonClient, run: flow_pb2.Run) -> int:
    if args.no_watch:
        if args.json:
            print_json(run)
        else:
            print(f"run {run.run_id} (attempt {run.attempt}): {_state(run.state)}")
        return 0
    return follow(client, run.run_id, as_json=args.json)


def _run(args: argparse.Namespace, client: KaireonClient) -> int:
    try:
        definition = load_definition(args.file)
    except FlowFileError as exc:
        print(f"kaireon: {exc}", file=sys.stderr)
        return EXIT_BAD_FILE
    reply = client.flow.StartRun(
        flow_pb2.StartRunRequest(definition=definition, run_id=args.run_id)
    )
    return _started(args, client, reply.run)


def _retry(args: argparse.Namespace, client: KaireonClient) -> int:
    request = flow_pb2.RetryRunRequest(run_id=args.run_id)
    if args.file:
        try:
            request.definition.CopyFrom(load_definition(args.file))
        except FlowFileError as exc:
            print(f"kaireon: {exc}", file=sys.stderr)
            return EXIT_BAD_FILE
    reply = client.flow.RetryRun(request)
    return _started(args, client, reply.run)


def _watch(args: argparse.Namespace, client: KaireonClient) -> int:
    return follow(client, args.run_id, as_json=args.json)


def _print_run(run: flow_pb2.Run) -> None:
    error = f" - {run.error}" if run.error else ""
    print(f"run {run.run_id} (attempt {run.attempt}): {_state(run.state)}{error}")
    for node in run.nodes:
        detail = f": {node.error}" if node.error else _duration(node)
        print(f"  {node.node_id:<24} {node.type:<20} {_node_state(node.state):<10}{detail}")


def _status(args: argparse.Namespace, client: KaireonClient) -> int:
    run = client.flow.GetRun(flow_pb2.GetRunRequest(run_id=args.run_id)).run
    if args.json:
        print_json(run)
    else:
        _print_run(run)
    return 0


def _list(args: argparse.Namespace, client: KaireonClient) -> int:
    runs: list[flow_pb2.Run] = []
    token = ""
    while len(runs) < args.limit:
        page = client.flow.ListRuns(
            flow_pb2.ListRunsRequest(page_size=min(500, args.limit - len(runs)), page_token=token)
        )
        runs.extend(page.runs)
        token = page.next_page_token
        if not token:
            break
    if args.json:
        print_json({"runs": [message_to_dict(r) for r in runs]})
    else:
        for run in runs:
            created = run.create_time.ToJsonString()
            print(f"{run.run_id:<34} {_state(run.state):<10} attempt {run.attempt:<3} {created}")
    return 0


def _cancel(args: argparse.Namespace, client: KaireonClient) -> int:
    run = client.flow.CancelRun(flow_pb2.CancelRunRequest(run_id=args.run_id)).run
    if args.json:
        print_json(run)
    else:
        _print_run(run)
    return 0


def _clear(args: argparse.Namespace, client: KaireonClient) -> int:
    reply = client.flow.ClearCheckpoints(flow_pb2.ClearCheckpointsRequest(run_id=args.run_id))
    if args.json:
        print_json(reply)
    else:
        print(f"cleared {reply.cleared} checkpoints of run {args.run_id}")
    return 0


def _output(args: argparse.Namespace, client: KaireonClient) -> int:
    reply = client.flow.GetNodeOutput(
        flow_pb2.GetNodeOutputRequest(
            run_id=args.run_id, node_id=args.node_id, max_bytes=args.max_bytes
        )
    )
    if reply.truncated:
        limit = args.max_bytes or "1 MiB (the default)"
        advice = (
            f"pass --max-bytes {reply.size_bytes}"
            if reply.size_bytes <= OUTPUT_LIMIT_BYTES
            else f"it is over the {OUTPUT_LIMIT_BYTES}-byte limit: write it to a table "
            "with a sink node instead"
        )
        print(
            f"kaireon: the output of node {reply.node_id} is {reply.size_bytes} bytes, "
            f"more than --max-bytes {limit}; {advice} (sha256 {reply.output_digest})",
            file=sys.stderr,
        )
        return EXIT_RPC_ERROR
    if args.json:
        summary = message_to_dict(reply)
        summary["output"] = json.loads(reply.output_json)
        del summary["outputJson"]
        if args.out is not None:
            args.out.write_text(reply.output_json)
        print_json(summary)
        return 0
    if args.out is not None:
        args.out.write_text(reply.output_json)
        print(
            f"output of {reply.node_id} ({reply.node_type}): {reply.size_bytes} bytes "
            f"written to {args.out}, sha256 {reply.output_digest}"
        )
    else:
        sys.stdout.write(reply.output_json + "\n")
    return 0
