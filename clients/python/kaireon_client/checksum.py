"""`FILE.sha256` files in the format `sha256sum -c` checks: `<hex>  <name>\\n`.

The name is the file's base name: run `sha256sum -c` in the file's directory.
The reader also accepts the older form, the bare hex digest on one line.
"""

from __future__ import annotations

import re
from pathlib import Path

_LINE = re.compile(r"([0-9a-fA-F]{64})(?:\s+\*?(.+))?")


class ChecksumFileError(ValueError):
    pass


def checksum_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def format_checksum_line(digest: str, name: str) -> str:
    # Two spaces: "text mode" in GNU coreutils' format, what sha256sum itself writes.
    return f"{digest.lower()}  {name}\n"


def write_checksum_file(path: Path, digest: str) -> Path:
    """Write `path`.sha256 naming `path`'s base name; returns the checksum file."""
    target = checksum_path(path)
    target.write_text(format_checksum_line(digest, path.name))
    return target


def parse_checksum(text: str, name: str | None = None) -> str:
    """The hex digest of a `.sha256` file's text (sha256sum format or bare hex).

    With `name`, a line naming another file is refused: the sidecar of
    `a.json` beside `b.json` must not vouch for it.
    """
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    match = _LINE.fullmatch(lines[0]) if len(lines) == 1 else None
    if match is None:
        raise ChecksumFileError(
            "not a sha256 checksum file (expected '<64 hex digits>  <file name>')"
        )
    named = match.group(2)
    if name is not None and named is not None and Path(named.strip()).name != name:
        raise ChecksumFileError(f"the .sha256 file is for {named.strip()!r}, not {name!r}")
    return match.group(1).lower()


def read_checksum_file(path: Path, name: str | None = None) -> str:
    """The hex digest of a `.sha256` file; see parse_checksum."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ChecksumFileError(f"cannot read {path}: {reason}") from None
    try:
        return parse_checksum(text, name)
    except ChecksumFileError as exc:
        raise ChecksumFileError(f"{path} is {exc}") from None
