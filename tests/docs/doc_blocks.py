"""Executes the ```bash blocks of a Markdown file, so documentation cannot drift.

The rules (CONTRIBUTING.md, "Documentation is tested"):

- every ```bash block of a file runs, in file order, in one `bash` with
  `set -euo pipefail` (a variable set in one block is there in the next);
- a command whose last line ends with `# => text` must print `text` on stdout;
- a block that cannot run on a developer machine is preceded by the line
  `<!-- doc-test: skip (reason) -->`; nothing else is skipped, and a skip
  marker that is not followed by a bash block is an error;
- a `<placeholder>` in a block that runs is an error: fill it with shell.

Only ```bash blocks run: ```sh, ```ts, ```yaml … are left alone (docs/AUDIT.md's
```sh blocks are run by tests/tlog/test_docs.py).
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

SKIP_MARKER = re.compile(r"^<!--\s*doc-test:\s*skip\s*(?:\((?P<reason>.*)\))?\s*-->\s*$")
EXPECTATION = re.compile(r"\s#\s*=>\s*(?P<text>.*?)\s*$")
# `<id>`, `<account>`, `<owner>/<repo>`: left for the reader to fill. Not `<(`, `<<EOF`, `< file`.
PLACEHOLDER = re.compile(r"(?<![<\w])<[A-Za-z][A-Za-z0-9_.-]*>")
FENCE = re.compile(r"^\s*(?P<ticks>```+)\s*(?P<info>[^`]*)$")


class DocFormatError(ValueError):
    """The Markdown breaks a rule of the doc test (not a failing command)."""


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # 1-based line of the first command line (after the opening fence)
    text: str
    skip_reason: str | None


@dataclass(frozen=True)
class Command:
    line: int  # 1-based line in the Markdown file where the command starts
    text: str
    expect: str | None  # stdout must contain this


def bash_blocks(path: Path) -> list[Block]:
    """The file's ```bash blocks with their skip reasons, in file order."""
    lines = path.read_text().splitlines()
    blocks: list[Block] = []
    pending_skip: tuple[int, str] | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        marker = SKIP_MARKER.match(line.strip())
        fence = FENCE.match(line)
        if marker:
            reason = (marker.group("reason") or "").strip()
            if not reason:
                raise DocFormatError(f"{path}:{i + 1}: a doc-test skip needs a (reason)")
            pending_skip = (i + 1, reason)
        elif fence:
            end = _closing_fence(lines, i, fence.group("ticks"))
            language = fence.group("info").split()[0] if fence.group("info").split() else ""
            if language == "bash":
                skip = pending_skip[1] if pending_skip else None
                blocks.append(Block(path, i + 2, "\n".join(lines[i + 1 : end]), skip))
            elif pending_skip:
                raise DocFormatError(
                    f"{path}:{pending_skip[0]}: doc-test skip marker before a ```{language} "
                    "block (only ```bash blocks run)"
                )
            pending_skip = None
            i = end
        elif line.strip() and pending_skip:
            raise DocFormatError(
                f"{path}:{pending_skip[0]}: doc-test skip marker not followed by a ```bash block"
            )
        i += 1
    if pending_skip:
        raise DocFormatError(f"{path}:{pending_skip[0]}: doc-test skip marker at the end")
    return blocks


def _closing_fence(lines: list[str], start: int, ticks: str) -> int:
    for j in range(start + 1, len(lines)):
        if lines[j].strip() == ticks:
            return j
    raise DocFormatError(f"unclosed code fence at line {start + 1}")


def commands(block: Block) -> list[Command]:
    """Splits a block into complete shell commands (as bash parses them), so that an
    expectation belongs to the whole command, continuation lines and quotes included."""
    lines = block.text.splitlines()
    out: list[Command] = []
    start = 0
    for end in range(len(lines)):
        chunk = "\n".join(lines[start : end + 1])
        if lines[end].rstrip().endswith("\\") or not _parses(chunk):
            continue
        if chunk.strip():
            match = EXPECTATION.search(lines[end])
            out.append(Command(block.line + start, chunk, match.group("text") if match else None))
        start = end + 1
    if start < len(lines):
        raise DocFormatError(
            f"{block.path}:{block.line + start}: this command does not parse as bash"
        )
    return out


def _parses(text: str) -> bool:
    return subprocess.run(["bash", "-n", "-c", text], capture_output=True).returncode == 0


PRELUDE = r"""set -euo pipefail
__doc_where="{file}"
__doc_out="$(mktemp)"
trap '__doc_status=$?; if [ "$__doc_status" -ne 0 ]; then
  cat "$__doc_out" >&2; echo "doc-test: $__doc_where: failed (exit status $__doc_status)" >&2
  fi; rm -f "$__doc_out"' EXIT
__doc_expect() {{
  cat "$__doc_out"
  if ! grep -qF -- "$1" "$__doc_out"; then
    echo "doc-test: $__doc_where: the output does not contain: $1" >&2
    exit 97
  fi
  : > "$__doc_out"
}}
"""


def script(path: Path, blocks: list[Block], rewrites: Mapping[str, str], display: str) -> str:
    """One bash script for the whole file; `rewrites` maps text of the docs (the real
    default addresses) to what this run uses."""
    parts = [PRELUDE.format(file=display)]
    for block in blocks:
        if block.skip_reason is not None:
            continue
        for command in commands(block):
            placeholder = PLACEHOLDER.search(_without_comments(command.text))
            if placeholder:
                raise DocFormatError(
                    f"{path}:{command.line}: placeholder {placeholder.group(0)} in a block "
                    "that runs: fill it with shell, or mark the block "
                    "<!-- doc-test: skip (reason) -->"
                )
            text = command.text
            for old, new in rewrites.items():
                text = text.replace(old, new)
            where = shlex.quote(f"{display}:{command.line}")
            parts.append(f"__doc_where={where}")
            if command.expect is None:
                parts.append(text)
            else:
                parts.append(f': > "$__doc_out"\n{{\n{text}\n}} > "$__doc_out"')
                parts.append(f"__doc_expect {shlex.quote(command.expect)}")
    return "\n".join(parts) + "\n"


def _without_comments(text: str) -> str:
    """The command without its trailing `# …` comments (where placeholders are prose)."""
    return "\n".join(re.sub(r"(^|\s)#.*$", "", line) for line in text.splitlines())


@dataclass(frozen=True)
class Outcome:
    returncode: int
    stdout: str
    stderr: str

    def report(self) -> str:
        return f"exit {self.returncode}\n--- stdout\n{self.stdout[-6000:]}\n--- stderr\n{self.stderr[-6000:]}"


def run_file(
    path: Path,
    *,
    cwd: Path,
    env: Mapping[str, str],
    rewrites: Mapping[str, str] | None = None,
    display: str | None = None,
    timeout: float = 300,
) -> Outcome:
    """Runs every ```bash block of `path` in one shell; a failed command or expectation
    stops it with a non-zero status and a `doc-test: FILE:LINE: …` line on stderr."""
    text = script(path, bash_blocks(path), rewrites or {}, display or str(path))
    # A session of its own: on timeout the whole group goes (a hung `curl` included),
    # so nothing keeps the pipes open behind the killed shell.
    proc = subprocess.Popen(
        ["bash", "-c", text],
        cwd=cwd,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        stderr += f"\ndoc-test: {display or path}: timed out after {timeout:g} s"
        return Outcome(-signal.SIGKILL, stdout, stderr)
    return Outcome(proc.returncode, stdout, stderr)
