"""`.sha256` files: written in `sha256sum -c` format, read in that format or as bare hex."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest

from kaireon_client.checksum import ChecksumFileError, read_checksum_file, write_checksum_file


def test_written_files_pass_sha256sum_check(tmp_path: Path) -> None:
    body = tmp_path / "export.json"
    body.write_bytes(b'{"a":1}')
    digest = hashlib.sha256(b'{"a":1}').hexdigest()
    written = write_checksum_file(body, digest)
    assert written.read_text() == f"{digest}  export.json\n"
    checked = subprocess.run(
        ["sha256sum", "-c", written.name], cwd=tmp_path, capture_output=True, text=True
    )
    assert (checked.returncode, checked.stdout) == (0, "export.json: OK\n"), checked.stderr
    assert read_checksum_file(written) == digest


@pytest.mark.parametrize(
    "text", ["{d}\n", "{d}  export.json\n", "{d} *export.json\n", "{D}  export.json"]
)
def test_reader_accepts_both_forms(tmp_path: Path, text: str) -> None:
    digest = hashlib.sha256(b"x").hexdigest()
    path = tmp_path / "f.sha256"
    path.write_text(text.format(d=digest, D=digest.upper()))
    assert read_checksum_file(path) == digest


@pytest.mark.parametrize("text", ["", "abc\n", "{d}{d}\n", "{d}  a\n{d}  b\n"])
def test_reader_refuses_anything_else(tmp_path: Path, text: str) -> None:
    path = tmp_path / "f.sha256"
    path.write_text(text.format(d="0" * 64))
    with pytest.raises(ChecksumFileError, match="is not a sha256 checksum file"):
        read_checksum_file(path)
    with pytest.raises(ChecksumFileError, match="cannot read"):
        read_checksum_file(tmp_path / "missing.sha256")


def test_a_sidecar_naming_another_file_is_refused(tmp_path: Path) -> None:
    digest = "0" * 64
    path = tmp_path / "a.json.sha256"
    path.write_text(f"{digest}  b.json\n")
    assert read_checksum_file(path) == digest  # no name to hold it to
    assert read_checksum_file(path, "b.json") == digest
    with pytest.raises(ChecksumFileError, match=r"is for 'b\.json', not 'a\.json'"):
        read_checksum_file(path, "a.json")
    path.write_bytes(b"\xff" * 64 + b"\n")
    with pytest.raises(ChecksumFileError, match="not UTF-8"):
        read_checksum_file(path)
