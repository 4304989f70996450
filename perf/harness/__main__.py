"""perf/run: seed, serve, measure the ceilings and the scenarios, print one table.

    perf/run [--level smoke|1k|2k|5k|10k] [--only GROUPS] [--profile] ...
    perf/soak ...                 # = perf/run soak ...: the bounded soak (harness/soak.py)

Exit status: 0 all ran and no judged target missed, 1 a scenario failed, 2 bad
usage, 3 a target judged at full scale missed (a smoke run judges none:
harness/targets.py). See perf/README.md for the commands and what every figure
means. The orchestrator is harness/run.py, the scenarios harness/scenarios/*.py.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys

from harness import run
from harness.stack import amount, common_args, count


def _sizes(text: str) -> tuple[int, int]:
    """`small,large`: two increasing whole numbers of rows, each at least 1000."""
    match = re.fullmatch(r"([0-9]{4,9}),([0-9]{4,9})", text)
    if match is None or int(match[1]) >= int(match[2]):
        raise argparse.ArgumentTypeError(
            "two increasing sizes, each 1000 to 999999999 rows, e.g. 10000,100000"
        )
    return int(match[1]), int(match[2])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from harness.scenarios import GROUPS

    parser = argparse.ArgumentParser(
        prog="perf/run",
        description="Seed, serve, measure ceilings and scenarios, print one table "
        "(perf/README.md).",
    )
    add = common_args(parser, "<timestamp>")
    add("--level", choices=list(run.PROFILES), default="1k")
    add("--smoke", action="store_true", help="tiny run: ~2 s per scenario at 20 RPS (tests)")
    add("--only", type=lambda s: set(s.split(",")), help=f"groups: {','.join(GROUPS)}")
    add("--duration", type=amount, help="seconds per k6 scenario")
    add("--customers", type=count, help="read customers to seed (default 10000)")
    add("--heavy-rows", type=count, help="rows per heavy customer (default 100000)")
    add(
        "--profile",
        action="store_true",
        help="py-spy the server under provenance load and while it runs the long flow chain",
    )
    add(
        "--scale-sizes",
        type=_sizes,
        help="--only scale: small,large rows per table (default 10000,100000; smoke 1000,10000)",
    )
    add(
        "--scale-contention",
        action="store_true",
        help="--only scale: also other calls' p50/p99 idle vs during a full StreamVerifyLog",
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.level = "smoke"
    if args.only and (unknown := args.only - set(GROUPS)):
        parser.error(f"unknown groups: {', '.join(sorted(unknown))}")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["soak"]:
        # perf/soak runs `perf/run soak ...`: one launcher, one environment.
        from harness import soak

        return soak.main(argv[1:])
    return asyncio.run(run.run(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
