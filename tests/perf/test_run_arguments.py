"""perf/run's own options: what is not understood is refused (exit 2), never
guessed; the harness parses them before it starts anything."""

from __future__ import annotations

import pytest

from harness.__main__ import parse_args


def test_scale_sizes_are_two_increasing_whole_numbers() -> None:
    args = parse_args(["--only", "scale", "--scale-sizes", "10000,100000"])
    assert args.scale_sizes == (10_000, 100_000)
    assert parse_args(["--smoke"]).scale_sizes is None  # the level's default


@pytest.mark.parametrize(
    "text",
    [
        "100000,10000",  # decreasing
        "10000,10000",  # equal
        "999,10000",  # below 1000
        "10000",  # one size
        "10000,100000,1000000",  # three
        "10000,100000\n",  # a trailing newline
        " 10000,100000",  # padding
        "1_000,100000",  # what int() would take
        "nan,100000",
        "-10000,100000",
        "1e4,1e5",
        "10000,9999999999",  # beyond the bound
    ],
)
def test_scale_sizes_refuse_anything_else(text: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--only", "scale", f"--scale-sizes={text}"])
    assert exit_info.value.code == 2
    assert "two increasing sizes" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--level", "3k"], ["--only", "scale,scales"]])
def test_an_unknown_level_or_group_is_refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_args(argv)
    assert exit_info.value.code == 2
