"""Running a perf/ command from a test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def run_perf(command: str, *args: str, out: Path) -> tuple[subprocess.CompletedProcess[str], Any]:
    """perf/<command> ... --out OUT with this interpreter and the embedded PostgreSQL;
    asserts it exited 0 and returns the process and its results.json."""
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["KAIREON_PYTHON"] = sys.executable
    proc = subprocess.run(
        [str(REPO / "perf" / command), *args, "--out", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    # The report (the table first) and the end of the log say what went wrong.
    assert proc.returncode == 0, proc.stdout[:6000] + proc.stderr[-3000:]
    return proc, json.loads((out / "results.json").read_text())
