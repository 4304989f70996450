"""`kaireon verify audit` on ListAuditEvents dumps: whole chains, pinned ranges, heads.

Rows are hashed here with the client's `integrity_hash`, the function the
server appends with, so these run without a server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kaireon_client.audit_chain import ChainVerifier, integrity_hash
from kaireon_client.cli import main


def _chain(n: int) -> list[dict[str, Any]]:
    events, prev = [], ""
    for seq in range(1, n + 1):
        event = {
            "tenantId": "demo",
            "seq": str(seq),  # protojson prints int64 as a string
            "id": f"00000000-0000-4000-8000-{seq:012d}",
            "action": "test_event",
            "entityType": "customer",
            "entityId": "",
            "entityIdDigest": "ab" * 32,
            "actor": "auditor@test",
            "changes": {"i": seq},
            "personalDigests": {"email": "cd" * 32},
            "createTime": f"2026-01-01T00:00:0{seq % 10}.123456789Z",
            "prevHash": prev,
        }
        row = {**event, "seq": seq, "timestamp": f"2026-01-01T00:00:0{seq % 10}.123456Z"}
        event["integrityHash"] = prev = integrity_hash(row)
        events.append(event)
    return events


def _verify(tmp_path: Path, events: list[dict[str, Any]], *args: str) -> int:
    path = tmp_path / "dump.json"
    path.write_text(json.dumps({"events": events}))
    return main(["verify", "audit", str(path), *args])


def test_a_whole_chain_and_a_pinned_range_verify(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    events = _chain(6)
    assert _verify(tmp_path, events) == 0
    assert "audit chain verified: 6 rows (seq 1..6" in capsys.readouterr().out
    after = f"3:{events[2]['integrityHash']}"
    assert _verify(tmp_path, events[3:], "--after", after) == 0
    assert "audit chain verified: 3 rows (seq 4..6" in capsys.readouterr().out
    head = f"6:{events[5]['integrityHash']}"
    assert _verify(tmp_path, events, "--head", head) == 0


def test_breaks_are_named_and_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    events = _chain(6)
    # The range does not continue the pinned row.
    assert _verify(tmp_path, events[3:], "--after", f"3:{'0' * 64}") == 1
    assert "at seq 4" in capsys.readouterr().out
    # Rows cut from the tail: the head remembers them.
    assert _verify(tmp_path, events[:5], "--head", f"6:{events[5]['integrityHash']}") == 1
    assert "sequence_gap" in capsys.readouterr().out
    # A row removed from the middle.
    assert _verify(tmp_path, events[:2] + events[3:]) == 1
    assert "at seq 3" in capsys.readouterr().out
    # Edited content.
    events[4]["changes"] = {"i": 99}
    assert _verify(tmp_path, events) == 1
    out = capsys.readouterr().out
    assert "at seq 5" in out and "integrity_hash_mismatch" in out


def test_unusable_input_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    assert _verify(tmp_path, _chain(2), "--after", "three") == 2
    assert _verify(tmp_path, []) == 2
    (tmp_path / "not.json").write_text("{")
    assert main(["verify", "audit", str(tmp_path / "not.json")]) == 2
    # A transparency-log export needs its pinned log key.
    (tmp_path / "tlog.json").write_text(json.dumps({"format": "kaireon-audit-export/v1"}))
    assert main(["verify", "audit", str(tmp_path / "tlog.json")]) == 2
    assert "--log-vkey" in capsys.readouterr().err


def test_a_resumed_verifier_counts_from_where_it_starts():
    events = _chain(4)
    rows = [{**e, "seq": int(e["seq"]), "timestamp": e["createTime"][:26] + "Z"} for e in events]
    verifier = ChainVerifier(start=(2, str(events[1]["integrityHash"])))
    assert all(verifier.feed(row) for row in rows[2:])
    assert verifier.position == (4, events[3]["integrityHash"])
    assert verifier.result().valid and verifier.rows_checked == 2
