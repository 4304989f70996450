"""Every JSON file a verifier or the CLI reads is parsed one way only.

A key twice in one object (Python keeps the last, other parsers the first),
NaN/Infinity, 1e400, nesting deep enough to blow the parser's stack, bytes that
are not UTF-8: each is refused with a clear message and exit 2 (unreadable
input), never a traceback and never a verdict. Flow files (JSON or YAML) are
held to the same rule, and YAML aliases (the "billion laughs") are refused.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.support import KAIREON, run

HOSTILE = {
    "duplicate key": (b'{"receipt": {}, "receipt": {"canonicalPayload": "{}"}}', "duplicate key"),
    "NaN": (b'{"receipt": NaN}', "not a finite number"),
    "Infinity": (b'{"a": -Infinity}', "not a finite number"),
    "1e400": (b'{"a": 1e400}', "not a finite number"),
    "deep nesting": (b"[" * 200_000 + b"]" * 200_000, "nested too deeply"),
    "not UTF-8": (b'{"a": "\xff\xfe"}', "not UTF-8"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
@pytest.mark.parametrize("artefact", ["receipt", "audit"])
async def test_verifiers_refuse_json_they_could_read_two_ways(
    tmp_path: Path, artefact: str, case: str
) -> None:
    body, reason = HOSTILE[case]
    path = tmp_path / "input.json"
    path.write_bytes(body)
    options = ["--allow-unsigned"] if artefact == "receipt" else []
    code, out, err = await run(KAIREON, "verify", artefact, str(path), *options)
    assert code == 2, (code, out, err)
    assert reason in err and "Traceback" not in err, err
    assert "verifies" not in out and "verified" not in out, out


@pytest.mark.parametrize(
    ("name", "text", "reason"),
    [
        ("dup.json", '{"name": "a", "name": "b", "nodes": []}', "duplicate key 'name'"),
        ("nan.json", '{"name": "a", "nodes": [], "x": NaN}', "not a finite number"),
        ("dup.yaml", "name: a\nnodes: []\nnodes: []\n", "duplicate key 'nodes'"),
        ("alias.yaml", "name: &n a\nnodes: []\ndescription: *n\n", "aliases are not allowed"),
    ],
)
async def test_flow_files_are_read_strictly(
    tmp_path: Path, name: str, text: str, reason: str
) -> None:
    path = tmp_path / name
    path.write_text(text)
    # Refused before any connection: the target is never dialled.
    code, out, err = await run(
        KAIREON, "--target", "127.0.0.1:1", "--tenant", "t", "flow", "run", str(path)
    )
    assert code == 2, (code, out, err)
    assert reason in err and "Traceback" not in err, err
