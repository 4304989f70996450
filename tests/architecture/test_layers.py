"""The layering rule, checked on the source's syntax trees (no import of it).

    <capability>/service.py, convert.py  protobuf <-> domain types only
    <capability>/*.py                    domain: plain async Python
    <capability>/repository.py           SQL
    platform/                            shared by every capability, knows none
    gateway/                             REST adapter: itself, generated code and the
                                         self-contained platform modules GATEWAY_PLATFORM

`check_layers(root)` reads every module under `root` (the `kaireon_server`
package directory) and returns the breaches; the planted-tree tests below show
that each rule is actually enforced.
"""

from __future__ import annotations

import ast
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import kaireon_server

PACKAGE = "kaireon_server"
SOURCE_ROOT = Path(kaireon_server.__file__).parent
# Modules of a capability that speak protobuf (the rest of it must not).
ADAPTER_MODULES = frozenset({"service.py", "convert.py"})
# The server modules the standalone REST adapter may import: settings readers,
# the event loop's choice, the error/configuration types, the trusted-proxy list and its own metrics and
# spans. Each imports nothing else from the server
# (test_gateway_platform_modules_are_self_contained).
GATEWAY_PLATFORM = frozenset(
    {
        "platform.env",
        "platform.errors",
        "platform.event_loop",
        "platform.auth.proxies",
        "platform.observability.http",
        "platform.observability.metrics",
        "platform.observability.tracing",
    }
)
# Their packages, named by `from kaireon_server.platform import env` and the like.
_GATEWAY_PLATFORM_PACKAGES = frozenset({"platform", "platform.auth", "platform.observability"})


def _gateway_may_import(parts: list[str]) -> bool:
    inner = ".".join(parts[1:])
    if parts[1] == "gateway" or inner in _GATEWAY_PLATFORM_PACKAGES:
        return True
    # The module itself, or a name defined in it (`...platform.env.EnvReader`).
    return inner in GATEWAY_PLATFORM or ".".join(parts[1:-1]) in GATEWAY_PLATFORM


@dataclass(frozen=True, order=True)
class Violation:
    path: str
    line: int
    rule: str
    detail: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: [{self.rule}] {self.detail}"


def _imports(tree: ast.Module, module: str, is_package: bool) -> Iterator[tuple[int, str]]:
    """(line, dotted name) of everything imported, `from a import b` as `a.b`.

    Relative imports are resolved against `module`; an unresolvable one is skipped.
    """
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = module.split(".")
                keep = len(parts) - node.level + (1 if is_package else 0)
                if keep <= 0:
                    continue
                base = ".".join([*parts[:keep], *([base] if base else [])])
            yield node.lineno, base
            for alias in node.names:
                if alias.name != "*":
                    yield node.lineno, f"{base}.{alias.name}"


def _is_grpc_or_generated(name: str) -> bool:
    parts = name.split(".")
    return (
        parts[0] == "grpc"
        or parts[0].startswith("grpc_")
        or any(p.endswith(("_pb2", "_pb2_grpc")) for p in parts)
    )


def _transaction_calls(tree: ast.Module) -> Iterator[int]:
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "transaction"
        ):
            yield node.lineno


def capabilities(root: Path) -> frozenset[str]:
    """The capability packages: top-level packages with a service.py."""
    return frozenset(p.parent.name for p in root.glob("*/service.py"))


def check_layers(root: Path, package: str = PACKAGE) -> list[Violation]:
    caps = capabilities(root)
    found: list[Violation] = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        top = rel.parts[0] if len(rel.parts) > 1 else ""
        is_package = path.name == "__init__.py"
        dotted = [package, *rel.parts[:-1]] + ([] if is_package else [path.stem])
        module = ".".join(dotted)
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        shown = rel.as_posix()

        def report(line: int, rule: str, detail: str, shown: str = shown) -> None:
            found.append(Violation(shown, line, rule, detail))

        in_capability = top in caps
        is_adapter = in_capability and len(rel.parts) == 2 and path.name in ADAPTER_MODULES
        is_service = in_capability and len(rel.parts) == 2 and path.name == "service.py"
        for line, name in _imports(tree, module, is_package):
            parts = name.split(".")
            own = parts[0] == package and len(parts) > 1
            if in_capability and not is_adapter and _is_grpc_or_generated(name):
                kind = "repository" if path.name == "repository.py" else "domain"
                report(line, "domain-imports-grpc", f"{kind} code imports {name}")
            if is_service and own and parts[-1] == "repository":
                report(line, "service-imports-repository", f"imports {name}")
            if (
                in_capability
                and own
                and len(parts) >= 3
                and parts[1] in caps
                and parts[1] != top
                and parts[2] == "repository"
            ):
                report(line, "foreign-repository", f"{top} imports {name}")
            if top == "platform" and own and parts[1] in caps:
                report(line, "platform-imports-capability", f"imports {name}")
            if top == "gateway" and own and not _gateway_may_import(parts):
                report(line, "gateway-imports-server", f"imports {name}")
        if is_service:
            for line in _transaction_calls(tree):
                report(line, "service-opens-transaction", "calls .transaction(")
    # `from a import b` yields a and a.b: report each line and rule once.
    unique = {(v.path, v.line, v.rule): v for v in reversed(found)}
    return sorted(unique.values())


def test_the_server_keeps_its_layers() -> None:
    violations = check_layers(SOURCE_ROOT)
    assert not violations, "layering broken:\n" + "\n".join(map(str, violations))


def test_gateway_platform_modules_are_self_contained() -> None:
    """What the gateway may import must not drag the rest of the server in."""
    allowed = {f"{PACKAGE}.{name}" for name in GATEWAY_PLATFORM}
    for name in sorted(GATEWAY_PLATFORM):
        path = SOURCE_ROOT.joinpath(*name.split(".")).with_suffix(".py")
        tree = ast.parse(path.read_text(encoding="utf-8"))
        module = f"{PACKAGE}.{name}"
        for line, imported in _imports(tree, module, is_package=False):
            parts = imported.split(".")
            if parts[0] != PACKAGE:
                continue
            ok = (
                imported in allowed
                or ".".join(parts[:-1]) in allowed
                # `from kaireon_server.platform.observability import metrics`
                or ".".join(parts[1:]) in _GATEWAY_PLATFORM_PACKAGES
            )
            assert ok, f"{name}:{line} imports {imported}"


def test_the_checker_sees_the_real_capabilities() -> None:
    # Guards against a check that passes because it looked at nothing.
    assert capabilities(SOURCE_ROOT) >= {"audit", "dsar", "erasure", "flow", "provenance"}


# --- the checker finds each breach in a planted tree ---------------------------

_CLEAN = {
    "audit/service.py": """
        import grpc
        from kaireon.audit.v1 import audit_pb2
        from kaireon_server.audit import log
    """,
    "audit/log.py": "from kaireon_server.audit import repository\n",
    "audit/repository.py": "import asyncpg\n",
    "dsar/service.py": "from kaireon_server.dsar.requests import DsarRequests\n",
    "dsar/convert.py": "from kaireon.dsar.v1 import dsar_pb2\n",
    "dsar/requests.py": """
        from kaireon_server.dsar import repository

        async def create(db):
            async with db.transaction("t"):
                pass
    """,
    "dsar/repository.py": "",
    "flow/service.py": "from kaireon_server.flow.manager import RunManager\n",
    "flow/nodes/subjects.py": "from kaireon_server.dsar.requests import create_in\n",
    "platform/db/listener.py": "import asyncpg\n",
    "platform/auth/interceptor.py": "import grpc\n",
    "gateway/server.py": """
        from kaireon_server.gateway import routes
        from kaireon_server.platform.env import EnvReader
        from kaireon_server.platform import errors
        from kaireon_server.platform.auth.proxies import TrustedProxies
        from kaireon.dsar.v1 import dsar_pb2
        import grpc
    """,
    "gateway/routes.py": "",
}

PLANTED = {
    "domain-imports-grpc": ("dsar/requests.py", "import grpc\n"),
    "domain-imports-grpc-generated": (
        "audit/log.py",
        "from kaireon.audit.v1 import audit_pb2\n",
    ),
    "domain-imports-grpc-nested": ("flow/nodes/subjects.py", "from grpc import aio\n"),
    "repository-imports-grpc": (
        "dsar/repository.py",
        "from google.protobuf import struct_pb2\n",
    ),
    "service-opens-transaction": (
        "dsar/service.py",
        """
        class S:
            async def Get(self, request, context):
                async with self._db.transaction("t") as con:
                    return con
        """,
    ),
    "service-imports-repository": (
        "flow/service.py",
        "from kaireon_server.flow import repository\n",
    ),
    "service-imports-repository-module": (
        "audit/service.py",
        "import kaireon_server.audit.repository\n",
    ),
    "platform-imports-capability": (
        "platform/db/listener.py",
        "from kaireon_server.flow.notifier import FlowNotifier\n",
    ),
    "platform-imports-capability-relative": (
        "platform/db/listener.py",
        "from ...dsar import notify\n",
    ),
    "gateway-imports-server": ("gateway/server.py", "from kaireon_server.app import App\n"),
    "gateway-imports-server-platform": (
        "gateway/server.py",
        "from kaireon_server.platform.config import Settings\n",
    ),
    "gateway-imports-server-auth": (
        "gateway/routes.py",
        "from kaireon_server.platform.auth.interceptor import status_for\n",
    ),
    "gateway-imports-capability": (
        "gateway/routes.py",
        "from kaireon_server.dsar.convert import request_message\n",
    ),
    "foreign-repository": (
        "flow/nodes/subjects.py",
        "from kaireon_server.dsar import repository as dsar_repository\n",
    ),
    "foreign-repository-module": (
        "audit/log.py",
        "from kaireon_server.dsar.repository import insert_request\n",
    ),
}


def _plant(root: Path, files: dict[str, str]) -> Path:
    package = root / PACKAGE
    for rel, text in files.items():
        path = package / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        for parent in path.relative_to(package).parents:
            (package / parent / "__init__.py").touch()
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    return package


def test_a_clean_planted_tree_passes(tmp_path: Path) -> None:
    assert check_layers(_plant(tmp_path, _CLEAN)) == []


@pytest.mark.parametrize("case", sorted(PLANTED))
def test_the_checker_reports_a_planted_breach(tmp_path: Path, case: str) -> None:
    rel, text = PLANTED[case]
    files = dict(_CLEAN)
    files[rel] = textwrap.dedent(files.get(rel, "")) + textwrap.dedent(text)
    violations = check_layers(_plant(tmp_path, files))
    rule = case.removesuffix("-generated").removesuffix("-nested").removesuffix("-module")
    rule = rule.removesuffix("-relative")
    expected = {
        "repository-imports-grpc": "domain-imports-grpc",
        "gateway-imports-capability": "gateway-imports-server",
        "gateway-imports-server-platform": "gateway-imports-server",
        "gateway-imports-server-auth": "gateway-imports-server",
    }.get(rule, rule)
    assert [(v.path, v.rule) for v in violations] == [(rel, expected)], violations
