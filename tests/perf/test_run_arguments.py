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


@pytest.mark.parametrize(
    "argv",
    [
        # Each of these used to be read as the level's default (0 is falsy) or
        # carried into the run (NaN, infinity, a negative count, a bad tenant).
        ["--duration", "0"],
        ["--duration", "nan"],
        ["--duration", "inf"],
        ["--duration", "-1"],
        ["--duration", "15\n"],
        ["--customers", "0"],
        ["--customers", "1e4"],
        ["--customers", "-5"],
        ["--heavy-rows", "10.5"],
        ["--workers", "0"],
        ["--tenant", "Perf"],
        ["--tenant", "perf\n"],
        ["--tenant", "a b"],
        ["--tenant", "t" * 64],
    ],
)
def test_numbers_and_the_tenant_are_refused_unless_understood(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_args(argv)
    assert exit_info.value.code == 2
    assert f"argument {argv[0]}" in capsys.readouterr().err


def test_numbers_and_the_tenant_in_range_are_taken() -> None:
    args = parse_args(
        ["--duration", "2.5", "--customers", "300", "--workers", "2", "--tenant", "perf_2"]
    )
    assert (args.duration, args.customers, args.workers, args.tenant) == (2.5, 300, 2, "perf_2")
