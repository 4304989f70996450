"""Validators match the whole string: no `$` end anchor, no one-argument `.match(`.

Python's `$` also matches before a trailing newline, so `^[a-z]+$` accepts
"demo\\n" (a second tenant, run or table name that looks like the first), and
`pattern.match(text)` checks a prefix only. The scan fails on either in the
server, the Python client and tools/; the tests below then send "x\\n"-style
ids for every kind of id through a real server.
"""

from __future__ import annotations

import ast
import re
import uuid
from pathlib import Path

import grpc
import pytest

from kaireon.dsar.v1 import dsar_pb2, dsar_pb2_grpc
from kaireon.erasure.v1 import erasure_pb2, erasure_pb2_grpc
from kaireon.flow.v1 import flow_pb2, flow_pb2_grpc
from kaireon.provenance.v1 import provenance_pb2, provenance_pb2_grpc
from kaireon_server.app import App
from kaireon_server.erasure.model import validate_customer_id
from kaireon_server.flow.manager import validate_run_id
from kaireon_server.platform.auth.identity import Role, validate_tenant
from kaireon_server.platform.errors import KaireonError
from kaireon_server.provenance.emit import validate_decision_id
from tests.security.conftest import flow_definition, new_tenant, wait_run
from tests.security.identity_support import rest_get
from tests.support.server import ROOT, metadata

SCANNED = [
    ROOT / "server" / "kaireon_server",
    ROOT / "clients" / "python" / "kaireon_client",
    ROOT / "tools",
]
_RE_FUNCTIONS = {"compile", "match", "fullmatch", "search", "sub", "subn", "split", "findall"}


def _dollar_anchor(pattern: str | bytes) -> bool:
    """True if the regex uses an unescaped `$` outside a character class."""
    text = pattern.decode("latin-1") if isinstance(pattern, bytes) else pattern
    text = re.sub(r"\\.", "", text)  # escapes, \$ included
    text = re.sub(r"\[\^?\]?[^\]]*\]", "", text)  # character classes
    return "$" in text


def compiled_names(source: str) -> set[str]:
    """Names (and attributes) bound to re.compile(...) in this source."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Assign) and _is_re_call(node.value, "compile"):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    names.add(target.id)
                elif isinstance(target, ast.Attribute):
                    names.add(target.attr)
    return names


def violations(
    source: str, filename: str = "<source>", imported: frozenset[str] = frozenset()
) -> list[str]:
    """`$` anchors in regex literals, re.match(), and one-argument .match( on compiled
    patterns, here or `imported` from elsewhere (a prefix check where full-string
    matching is meant)."""
    tree = ast.parse(source, filename)
    compiled = compiled_names(source) | imported
    found: list[str] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        where = f"{filename}:{node.lineno}"
        if _is_re_call(node, None) and node.args:
            first = node.args[0]
            literal = isinstance(first, ast.Constant) and isinstance(first.value, str | bytes)
            if literal and _dollar_anchor(first.value):  # type: ignore[attr-defined]
                found.append(f"{where}: regex uses $ as end anchor (use fullmatch or \\Z)")
        if _is_re_call(node, "match"):
            found.append(f"{where}: re.match checks a prefix (use re.fullmatch)")
        func = node.func
        if (
            isinstance(func, ast.Attribute)
            and func.attr == "match"
            and len(node.args) == 1
            and _name_of(func.value) in compiled
        ):
            found.append(f"{where}: {_name_of(func.value)}.match checks a prefix (use fullmatch)")
    return found


def _name_of(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return ""


def _is_re_call(node: ast.expr, name: str | None) -> bool:
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
        return False
    func = node.func
    wanted = _RE_FUNCTIONS if name is None else {name}
    return isinstance(func.value, ast.Name) and func.value.id == "re" and func.attr in wanted


def _sources() -> list[Path]:
    files = [p for root in SCANNED for p in root.rglob("*.py")]
    return [p for p in files if not p.name.endswith(("_pb2.py", "_pb2_grpc.py", "_pb2.pyi"))]


def test_the_scan_finds_each_kind_of_prefix_match() -> None:
    planted = """
import re
A = re.compile(r"^[a-z]+$")
B = re.compile(rb"x$|y")
C = re.compile(r"[a-z]+")
ok = re.compile(r"[$]\\$\\Z")
def f(s):
    re.match(r"[a-z]+", s)
    C.match(s)
    C.match(s, 3)
    C.fullmatch(s)
"""
    found = violations(planted)
    lines = sorted(f.split(": ", 1)[0] for f in found)
    assert lines == ["<source>:3", "<source>:4", "<source>:8", "<source>:9"], found


def test_no_validator_in_the_code_matches_a_prefix_or_ends_with_dollar() -> None:
    files = _sources()
    assert len(files) > 50, "the scan sees the source tree"
    texts = {str(path.relative_to(ROOT)): path.read_text() for path in files}
    # A pattern compiled in one module is often used in another (DYNAMIC_TABLE in sinks.py).
    everywhere = frozenset(name for text in texts.values() for name in compiled_names(text))
    assert {"DYNAMIC_TABLE", "RUN_ID", "_TENANT"} <= everywhere
    found = [v for name, text in texts.items() for v in violations(text, name, everywhere)]
    assert not found, "\n".join(found)


# --- every kind of id, with a trailing newline -------------------------------------------


@pytest.mark.parametrize(
    ("check", "good"),
    [
        (validate_tenant, "demo"),
        (validate_run_id, "nlrun"),
        (validate_customer_id, "cust_00001"),
        (validate_decision_id, "dec_00001_1"),
    ],
    ids=["tenant", "run", "customer", "decision"],
)
def test_validators_refuse_a_trailing_newline(check, good: str) -> None:
    assert check(good) == good
    for bad in (f"{good}\n", f"{good}\r\n", f"{good}\n{good}", f"\n{good}"):
        with pytest.raises(KaireonError):
            check(bad)


def test_roles_are_exact_lower_case_names() -> None:
    assert [Role.parse(n) for n in ("viewer", "operator", "admin")] == list(Role)
    for bad in ("ADMIN", "Admin", " admin", "admin\t", "admin\n", "", "root", 3, None):
        with pytest.raises(KaireonError):
            Role.parse(bad)


async def test_newline_ids_are_refused_by_the_real_server(
    app: App, channel: grpc.aio.Channel
) -> None:
    tenant = new_tenant("n")
    md = metadata(tenant, "admin")
    flow = flow_pb2_grpc.FlowRunnerServiceStub(channel)
    await flow.StartRun(
        flow_pb2.StartRunRequest(definition=flow_definition("nl"), run_id="nlrun"), metadata=md
    )
    await wait_run(channel, tenant, "nlrun")
    dsar = await dsar_pb2_grpc.DsarServiceStub(channel).CreateDsarRequest(
        dsar_pb2.CreateDsarRequestRequest(request_type="export", subject_id="cust_00001"),
        metadata=md,
    )
    dsar_id = dsar.request.id
    assert str(uuid.UUID(dsar_id)) == dsar_id

    async def code_of(call) -> grpc.StatusCode:
        try:
            await call
        except grpc.aio.AioRpcError as error:
            return error.code()
        return grpc.StatusCode.OK

    invalid = grpc.StatusCode.INVALID_ARGUMENT
    refused = {
        "start run": await code_of(
            flow.StartRun(
                flow_pb2.StartRunRequest(definition=flow_definition("nl"), run_id="nlrun\n"),
                metadata=md,
            )
        ),
        "get run": await code_of(
            flow.GetRun(flow_pb2.GetRunRequest(run_id="nlrun\n"), metadata=md)
        ),
        "hold customer": await code_of(
            erasure_pb2_grpc.ErasureServiceStub(channel).SetLegalHold(
                erasure_pb2.SetLegalHoldRequest(customer_id="cust_00001\n", reason="case-1"),
                metadata=md,
            )
        ),
        "decision": await code_of(
            provenance_pb2_grpc.ProvenanceServiceStub(channel).GetDecisionProvenance(
                provenance_pb2.GetDecisionProvenanceRequest(decision_id="dec_00001_1\n"),
                metadata=md,
            )
        ),
        "dsar": await code_of(
            dsar_pb2_grpc.DsarServiceStub(channel).GetDsarRequest(
                dsar_pb2.GetDsarRequestRequest(id=f"{dsar_id}\n"), metadata=md
            )
        ),
    }
    # A DSAR id that is not one cannot exist: NOT_FOUND, as for any unknown id.
    expected = {**dict.fromkeys(refused, invalid), "dsar": grpc.StatusCode.NOT_FOUND}
    assert refused == expected
    # Other spellings uuid.UUID would take are other names, not aliases, of the request.
    dsar_stub = dsar_pb2_grpc.DsarServiceStub(channel)
    for alias in (f"{{{dsar_id}}}", f"urn:uuid:{dsar_id}", dsar_id.replace("-", "")):
        code = await code_of(
            dsar_stub.GetDsarRequest(dsar_pb2.GetDsarRequestRequest(id=alias), metadata=md)
        )
        assert code == grpc.StatusCode.NOT_FOUND, alias
    assert (
        await code_of(
            dsar_stub.GetDsarRequest(
                dsar_pb2.GetDsarRequestRequest(id=dsar_id.upper()), metadata=md
            )
        )
        == grpc.StatusCode.OK
    )

    headers = [("X-Tenant-Id", tenant), ("X-User-Role", "admin")]
    assert (await rest_get(app.http_port, "/api/v1/flow/runs/nlrun", headers))[0] == 200
    for path, status in [
        ("/api/v1/flow/runs/nlrun%0A", 400),
        ("/api/v1/decisions/dec_00001_1%0A/provenance", 400),
        (f"/api/v1/dsar/{dsar_id}%0A", 404),
    ]:
        got, body = await rest_get(app.http_port, path, headers)
        assert got == status, (path, body)
