"""Every ```bash block of README.md, CONTRIBUTING.md and docs/*.md runs against a real demo server and
prints what its `# =>` comments say (the rules: tests/docs/doc_blocks.py, CONTRIBUTING.md).

The server is `kaireon-server --demo` on a fresh embedded PostgreSQL of its own,
with a signing key (`COSIGN_KEY`) and an audit-log key (`KAIREON_LOG_KEY`) made
for this run, so the verification walkthroughs have signatures to check. It listens on free ports; the documents show the real
defaults (localhost:50051 gRPC, localhost:8080 REST), which are rewritten to
those ports in the commands, and `KAIREON_TARGET` points the CLI there. Each
file runs in a scratch directory that links every top-level entry of the
repository, so `.venv/bin/…`, `tools/…`, `docs/examples/…` resolve and the files
the commands write stay out of the checkout.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.docs.doc_blocks import bash_blocks, run_file, script
from tests.support.keys import write_log_key
from tests.support.server import ServerProcess

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]


def _name(path: Path) -> str:
    return str(path.relative_to(ROOT))


@pytest.mark.parametrize("path", DOCUMENTS, ids=_name)
def test_every_block_is_well_formed(path: Path) -> None:
    """Fast: markers, fences, complete commands, no placeholder left in a block that runs."""
    script(path, bash_blocks(path), {}, _name(path))


@pytest.fixture(scope="module")
def log_key_path(key_dir: Path) -> Path:
    """A throwaway Ed25519 audit-log key (in key_dir: the log scan looks for its bytes)."""
    return write_log_key(key_dir / "log-doc-test.key")


@pytest.fixture(scope="module")
def demo_server(signing_key_path: Path, log_key_path: Path) -> Iterator[ServerProcess]:
    folder = Path(tempfile.mkdtemp(prefix="kaireon-doc-test-"))
    env = {
        "DATABASE_URL": "",  # the embedded PostgreSQL, fresh, as on a developer machine
        "KAIREON_DATA_DIR": str(folder / "data"),
        "KAIREON_GRPC_HOST": "127.0.0.1",
        "KAIREON_GRPC_PORT": "0",
        "KAIREON_HTTP_PORT": "auto",
        "COSIGN_KEY": str(signing_key_path),
        "KAIREON_LOG_KEY": str(log_key_path),
    }
    server = ServerProcess(env, ["--demo"]).start(timeout=180)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


def _scratch_copy(into: Path) -> Path:
    """A directory that looks like the repository root but keeps what commands write."""
    for entry in ROOT.iterdir():
        (into / entry.name).symlink_to(entry)
    return into


def _shell_env(server: ServerProcess) -> dict[str, str]:
    """This environment without the test's venv on PATH: the docs name `.venv/bin/…`."""
    venv_bin = str(Path(sys.prefix) / "bin")
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != venv_bin)
    env["KAIREON_TARGET"] = server.target
    return env


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("path", DOCUMENTS, ids=_name)
def test_documented_commands_run_as_written(
    path: Path, demo_server: ServerProcess, tmp_path: Path
) -> None:
    if all(block.skip_reason for block in bash_blocks(path)):
        pytest.skip("no bash block that runs")  # shown in the report, never silent
    rewrites = {
        f"{host}:{default}": f"127.0.0.1:{port}"
        for host in ("localhost", "127.0.0.1")
        for default, port in ((50051, demo_server.grpc_port), (8080, demo_server.http_port))
    }
    outcome = run_file(
        path,
        cwd=_scratch_copy(tmp_path),
        env=_shell_env(demo_server),
        rewrites=rewrites,
        display=_name(path),
        timeout=540,
    )
    assert outcome.returncode == 0, outcome.report()
