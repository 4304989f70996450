"""One home for environment parsing: platform/env.py, checked on the syntax trees.

Outside platform/env.py no server module may
    - touch the process environment (`os.environ`, `os.getenv`, `from os import environ`),
    - look a setting up itself (`env.get("KAIREON_...")`, `env["COSIGN_KEY"]`,
      `env.get(SOMETHING_ENV)`): settings are read with `EnvReader`,
    - define its own parse helper (`_int`, `_bool`, `_float`, `_port`, ...).
Entry points get the environment from `platform.env.process_environment()`.
"""

from __future__ import annotations

import ast
import re
import textwrap
from pathlib import Path

import pytest

import kaireon_server

SOURCE_ROOT = Path(kaireon_server.__file__).parent
HOME = "platform/env.py"

# Names the server reads (prefixes of its own variables and of the build inputs).
_SETTING_NAME = re.compile(
    r"(?:KAIREON|COSIGN|GIT|IMAGE|BUILD|BUILDER|SBOM|GITHUB)_[A-Z0-9_]+|DATABASE_URL"
)
_HELPER_NAME = re.compile(
    r"_(?:int|integer|bool|boolean|float|number|port|http_port|seconds|timeout|path|get|env)"
)


def _is_setting_key(node: ast.expr) -> bool:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return bool(_SETTING_NAME.fullmatch(node.value))
    # TIMEOUT_ENV = "KAIREON_..." then env.get(TIMEOUT_ENV)
    return isinstance(node, ast.Name) and node.id.endswith("_ENV")


def _is_env_helper(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """`_int(env, name, ...)` and its kin: a parse helper taking the environment."""
    params = {a.arg for a in (*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs)}
    return bool(_HELPER_NAME.fullmatch(node.name)) and bool(params & {"env", "environ"})


def _is_lookup(node: ast.AST) -> bool:
    """`mapping.get("KAIREON_...")`: a setting looked up by hand."""
    if not isinstance(node, ast.Call) or not node.args:
        return False
    method = node.func.attr if isinstance(node.func, ast.Attribute) else ""
    return method == "get" and _is_setting_key(node.args[0])


def breaches(tree: ast.Module) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in {"environ", "environb", "getenv"}:
            found.append((node.lineno, f"uses os.{node.attr}"))
        elif isinstance(node, ast.ImportFrom) and node.module == "os":
            for alias in node.names:
                if alias.name in {"environ", "environb", "getenv"}:
                    found.append((node.lineno, f"imports os.{alias.name}"))
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and _is_env_helper(node):
            found.append((node.lineno, f"defines its own env helper {node.name}()"))
        elif _is_lookup(node):
            found.append((node.lineno, "looks a setting up with .get(); use EnvReader"))
        elif isinstance(node, ast.Subscript) and _is_setting_key(node.slice):
            found.append((node.lineno, "looks a setting up with [...]; use EnvReader"))
    return found


def check_env_reads(root: Path) -> list[str]:
    problems = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if rel == HOME:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        problems += [f"{rel}:{line}: {what}" for line, what in breaches(tree)]
    return problems


def test_only_platform_env_parses_the_environment() -> None:
    problems = check_env_reads(SOURCE_ROOT)
    assert not problems, "environment read outside platform/env.py:\n" + "\n".join(problems)


def test_the_home_itself_is_where_the_environment_is_read() -> None:
    # Guards against a check that passes because it looked at nothing.
    home = ast.parse((SOURCE_ROOT / HOME).read_text(encoding="utf-8"))
    assert breaches(home), "platform/env.py no longer reads os.environ: update HOME"


PLANTED = {
    "os.environ": "import os\nPORT = os.environ.get('X')\n",
    "os.getenv": "import os\nPORT = os.getenv('X')\n",
    "from os import environ": "from os import environ\n",
    "own helper": "def _int(env, name, default):\n    return int(env.get(name) or default)\n",
    "own bool helper": "def _bool(env, name):\n    return env.get(name) == 'true'\n",
    "get literal": "def f(env):\n    return env.get('KAIREON_GRPC_PORT')\n",
    "get constant": "TIMEOUT_ENV = 'KAIREON_X'\ndef f(env):\n    return env.get(TIMEOUT_ENV)\n",
    "subscript": "def f(env):\n    return env['COSIGN_KEY']\n",
}


@pytest.mark.parametrize("case", sorted(PLANTED))
def test_the_checker_reports_a_planted_read(tmp_path: Path, case: str) -> None:
    (tmp_path / "platform").mkdir()
    (tmp_path / HOME).write_text("import os\nENV = os.environ\n", encoding="utf-8")
    (tmp_path / "dsar").mkdir()
    (tmp_path / "dsar/settings.py").write_text(textwrap.dedent(PLANTED[case]), encoding="utf-8")
    problems = check_env_reads(tmp_path)
    assert problems and all(p.startswith("dsar/settings.py:") for p in problems), problems


def test_reading_through_envreader_passes(tmp_path: Path) -> None:
    (tmp_path / "dsar").mkdir()
    (tmp_path / "dsar/settings.py").write_text(
        textwrap.dedent(
            """
            from kaireon_server.platform.env import EnvReader

            def workers(env):
                return EnvReader(env).integer("KAIREON_DSAR_WORKERS", 1, minimum=0)

            def lookup(row):
                return row.get("name"), row["id"]
            """
        ),
        encoding="utf-8",
    )
    assert check_env_reads(tmp_path) == []
