"""``bench show``, ``compare`` and ``report``: result files read back, priced and compared."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from bench.analysis import table
from bench.analysis.compare import Threshold, compare, gate_verdict, render
from bench.analysis.cost import PRICE_BASES
from bench.analysis.pricing import DEFAULT_BASIS, Pricing, build_pricing
from bench.commands.exits import EXIT_FAILED_RUN, EXIT_OK
from bench.run.store import check_writable, load_records
from bench.schema.record import ResultError, RunRecord
from bench.schema.spec import SpecError


def _add_wide(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--wide",
        action="store_true",
        help="every column (default: a narrow table of the columns that decide, ~120 wide)",
    )


def _add_pricing(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--prices",
        action="append",
        type=Path,
        default=[],
        help="a price file overriding or adding catalogue entries (repeatable)",
    )
    p.add_argument(
        "--price-per-hour",
        type=float,
        help="hourly price for runs without an instance type (a local GPU)",
    )
    p.add_argument(
        "--instance",
        dest="price_instance",
        action="append",
        default=[],
        metavar="[HARDWARE=]TYPE",
        help="instance type for runs that recorded none; HARDWARE=TYPE only for runs on that "
        "GPU, e.g. 'NVIDIA H200=p5en.48xlarge' (repeatable)",
    )
    p.add_argument(
        "--spot",
        action="append",
        default=[],
        metavar="TYPE=PRICE",
        help="price an instance type at this hourly (spot) price (repeatable)",
    )
    p.add_argument(
        "--price-basis",
        choices=PRICE_BASES,
        default=DEFAULT_BASIS,
        help="used (default): a run pays the share of the instance's GPUs it used, the whole "
        "instance when it used them all or ran on the CPU; instance: every run pays the "
        "whole instance",
    )


def _add_strict(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--strict",
        action="store_true",
        help="fail (exit 2) on an unreadable or malformed result file instead of skipping it",
    )


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Add ``compare``, ``report`` and ``show``."""
    p = sub.add_parser(
        "compare",
        help="compare runs from any machines on cost-performance; gate on regressions",
        description="Group runs by the work they measured, price them by instance type, "
        "sort by dollars per million samples, and compare them with baseline runs. With "
        "--fail-on, exit 1 when a run regressed against its baseline (for CI gates).",
    )
    p.add_argument("paths", nargs="+", type=Path, help="result files or directories")
    _add_strict(p)
    _add_pricing(p)
    p.add_argument(
        "--baseline",
        action="append",
        type=Path,
        default=[],
        help="baseline result file or directory (repeatable)",
    )
    p.add_argument(
        "--fail-on",
        action="append",
        default=[],
        metavar="METRIC:+-N%",
        help="regression threshold, e.g. throughput:-5%%, p99:+10%% (repeatable)",
    )
    p.add_argument("--format", default="github", help="tabulate format")
    _add_wide(p)

    p = sub.add_parser(
        "report",
        help="Markdown, HTML (plots embedded) and CSV report of runs",
        description="Build report.md, a self-contained report.html and runs.csv from result "
        "files or directories. It opens with the runs that could not be priced (and how to "
        "price them) and a decision table: per job, the cheapest instance and path, the "
        "runner-up and by how much, and whether each figure is valid; then ranked cost and "
        "throughput charts per job, latency-load curves, scaling, each instance's "
        "environment, telemetry over time, and the harness's own overhead in an appendix.",
    )
    p.add_argument("paths", nargs="+", type=Path, help="result files or directories")
    _add_strict(p)
    p.add_argument("--out", type=Path, required=True, help="directory for the report")
    p.add_argument("--title", default="Benchmark report")
    _add_pricing(p)

    p = sub.add_parser(
        "show",
        help="print stored results as a table",
        description="Print result files (or directories of them) as a table.",
    )
    p.add_argument("paths", nargs="+", type=Path)
    _add_strict(p)
    p.add_argument("--format", default="github", help="tabulate format (github, plain, ...)")
    _add_wide(p)


def _load(
    paths: list[Path], strict: bool, *, required: bool = True
) -> list[tuple[Path, RunRecord]]:
    """Records under ``paths``; without ``strict`` an unreadable or malformed file is skipped
    with a one-line warning (one bad file from a fleet must not block the comparison)."""
    skipped: list[str] = []
    runs = load_records(paths, strict=strict, skipped=skipped)
    for reason in skipped:
        print(f"bench: warning: skipped {reason}", file=sys.stderr)
    if skipped:
        print(
            f"bench: {len(skipped)} unreadable result file(s) skipped (--strict makes them fatal)",
            file=sys.stderr,
        )
    if required and not runs:
        raise ResultError(f"no readable result files under {', '.join(map(str, paths))}")
    return runs


def cmd_show(args: argparse.Namespace) -> int:
    records = (r for _, r in _load(args.paths, args.strict))
    print(table.render(records, fmt=args.format, wide=args.wide))
    return EXIT_OK


def _pricing(args: argparse.Namespace) -> Pricing:
    return build_pricing(
        price_files=args.prices,
        spot=args.spot,
        price_per_hour=args.price_per_hour,
        instances=args.price_instance,
        basis=args.price_basis,
    )


def cmd_compare(args: argparse.Namespace) -> int:
    thresholds = [Threshold.parse(t) for t in args.fail_on]
    if thresholds and not args.baseline:
        raise SpecError("--fail-on needs --baseline")
    pricing = _pricing(args)
    runs = _load(args.paths, args.strict)
    baselines = _load(args.baseline, args.strict, required=False) if args.baseline else []
    result = compare(runs, pricing, baselines, thresholds)
    print(render(result, args.format, wide=args.wide))
    if not thresholds:
        return EXIT_OK
    lines, passed = gate_verdict(result)
    print("\n".join(lines))
    return EXIT_OK if passed else EXIT_FAILED_RUN


def cmd_report(args: argparse.Namespace) -> int:
    pricing = _pricing(args)
    runs = _load(args.paths, args.strict)
    check_writable(args.out, "--out")
    from bench.analysis.report import build  # matplotlib: only when a report is asked for

    for kind, path in build(compare(runs, pricing), args.out, args.title).items():
        print(f"{kind}: {path}")
    return EXIT_OK
