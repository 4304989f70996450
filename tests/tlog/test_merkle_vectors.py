"""RFC 9162 proof verification against the transparency-dev/merkle published vectors.

The vectors (Apache-2.0, LICENSE beside them) are vendored in tests/vectors/rfc9162-proofs
so the test needs nothing outside the repository: every `wantErr: false` case must
verify and every `wantErr: true` case must be refused.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from kaireon_client.tlog.merkle import ProofError, verify_consistency, verify_inclusion

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "rfc9162-proofs"


def _cases(kind: str) -> list[Any]:
    files = sorted((VECTORS / kind).rglob("*.json"))
    return [pytest.param(json.loads(f.read_text()), id=str(f.relative_to(VECTORS))) for f in files]


def _b64(text: str) -> bytes:
    return base64.b64decode(text)


def test_the_vendored_vectors_are_all_there() -> None:
    assert (VECTORS / "LICENSE").is_file()
    assert len(_cases("inclusion")) >= 70
    assert len(_cases("consistency")) >= 70
    wanted = [c.values[0]["wantErr"] for c in _cases("inclusion") + _cases("consistency")]
    assert wanted.count(False) >= 10 and wanted.count(True) >= 100


@pytest.mark.parametrize("case", _cases("inclusion"))
def test_inclusion_vector(case: dict[str, Any]) -> None:
    def check() -> None:
        verify_inclusion(
            _b64(case["leafHash"]),
            case["leafIdx"],
            case["treeSize"],
            [_b64(p) for p in case["proof"] or []],
            _b64(case["root"]),
        )

    if case["wantErr"]:
        with pytest.raises(ProofError):
            check()
    else:
        check()


@pytest.mark.parametrize("case", _cases("consistency"))
def test_consistency_vector(case: dict[str, Any]) -> None:
    def check() -> None:
        verify_consistency(
            case["size1"],
            case["size2"],
            [_b64(p) for p in case["proof"] or []],
            _b64(case["root1"]),
            _b64(case["root2"]),
        )

    if case["wantErr"]:
        with pytest.raises(ProofError):
            check()
    else:
        check()
