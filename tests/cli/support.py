"""Run the real `kaireon` console script as a subprocess (from async tests)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

KAIREON = str(Path(sys.executable).parent / "kaireon")


async def run(
    *argv: str,
    stdin: bytes | None = None,
    stdin_fd: int | None = None,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> tuple[int, str, str]:
    """(exit status, stdout, stderr). `stdin_fd` (e.g. a pty) replaces the stdin pipe."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("KAIREON_")}
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=stdin_fd if stdin_fd is not None else asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=cwd,
        env={**clean, **(env or {})},
    )
    out, err = await asyncio.wait_for(
        proc.communicate(stdin if stdin_fd is None else None), timeout=90
    )
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def cli(target: str, tenant: str, role: str = "admin") -> list[str]:
    return [KAIREON, "--target", target, "--tenant", tenant, "--role", role]
