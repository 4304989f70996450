"""The doc runner itself: planted wrong examples make it fail, and say where.

No server needed: the planted documents run plain shell commands."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.docs.doc_blocks import DocFormatError, bash_blocks, commands, run_file


def _doc(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "PLANTED.md"
    path.write_text(text)
    return path


def _run(path: Path) -> tuple[int, str, str]:
    outcome = run_file(path, cwd=path.parent, env=dict(os.environ), display=path.name)
    return outcome.returncode, outcome.stdout, outcome.stderr


def test_a_correct_document_passes_and_keeps_variables_across_blocks(tmp_path: Path) -> None:
    path = _doc(
        tmp_path,
        "# ok\n\n```bash\nNAME=kaireon   # set here\n```\n\ntext\n\n"
        '```bash\necho "hello $NAME" \\\n  again       # => hello kaireon again\n'
        "printf '%s\\n' '{\"a\":\n 1}' | tr -d ' \\n'   # => {\"a\":1}\n```\n",
    )
    code, stdout, stderr = _run(path)
    assert code == 0, stderr
    assert "hello kaireon again" in stdout


def test_a_wrong_expectation_fails_naming_file_line_and_text(tmp_path: Path) -> None:
    path = _doc(tmp_path, "# wrong\n\n```bash\necho 'rows_checked: 6'   # => rowsChecked\n```\n")
    code, _, stderr = _run(path)
    assert code != 0
    assert "PLANTED.md:4: the output does not contain: rowsChecked" in stderr


def test_a_failing_command_fails_and_stops_the_file(tmp_path: Path) -> None:
    path = _doc(
        tmp_path,
        "# failing\n\n```bash\necho first\nls does-not-exist-here\necho never > ran.txt\n```\n",
    )
    code, stdout, stderr = _run(path)
    assert code != 0
    assert "PLANTED.md:5: failed" in stderr
    assert "first" in stdout and not (tmp_path / "ran.txt").exists()


def test_a_failure_inside_a_pipeline_fails(tmp_path: Path) -> None:
    path = _doc(tmp_path, "```bash\nfalse | cat\n```\n")
    assert _run(path)[0] != 0


def test_a_marked_block_is_skipped_and_an_unmarked_one_is_not(tmp_path: Path) -> None:
    marked = _doc(
        tmp_path,
        "<!-- doc-test: skip (needs docker) -->\n```bash\nexit 3\n```\n\n```bash\ntrue\n```\n",
    )
    assert [b.skip_reason for b in bash_blocks(marked)] == ["needs docker", None]
    assert _run(marked)[0] == 0
    unmarked = _doc(tmp_path, "```bash\ndocker-that-is-not-installed ps\n```\n")
    assert _run(unmarked)[0] != 0


def test_a_placeholder_in_a_block_that_runs_is_refused(tmp_path: Path) -> None:
    path = _doc(tmp_path, "```bash\ncurl -s localhost:8080/api/v1/dsar/<id>/watch\n```\n")
    with pytest.raises(DocFormatError, match=r"placeholder <id>"):
        _run(path)
    # Not placeholders: process substitution, redirections, comments.
    fine = _doc(tmp_path, "```bash\ncat <(echo a) < /dev/null   # see <docs>\n```\n")
    assert _run(fine)[0] == 0


@pytest.mark.parametrize(
    "text",
    [
        "<!-- doc-test: skip -->\n```bash\ntrue\n```\n",  # no reason
        "<!-- doc-test: skip (why) -->\nprose\n```bash\ntrue\n```\n",  # not before the block
        "<!-- doc-test: skip (why) -->\n```sh\ntrue\n```\n",  # not a bash block
        "```bash\necho 'unterminated\n```\n",  # does not parse
    ],
)
def test_malformed_markers_and_blocks_are_errors(tmp_path: Path, text: str) -> None:
    path = _doc(tmp_path, text)
    with pytest.raises(DocFormatError):
        for block in bash_blocks(path):
            commands(block)


def test_a_hanging_command_is_killed_with_its_children(tmp_path: Path) -> None:
    path = _doc(tmp_path, "```bash\necho started\nsleep 600 | cat\n```\n")
    outcome = run_file(path, cwd=tmp_path, env=dict(os.environ), display=path.name, timeout=2)
    assert outcome.returncode != 0
    assert "started" in outcome.stdout and "timed out after 2 s" in outcome.stderr
