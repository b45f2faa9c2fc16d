"""``bench sla``: the highest server load whose latency percentile stays under a bound."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.commands.exits import EXIT_FAILED_RUN, EXIT_OK
from bench.commands.run_options import add_run_options, run_options
from bench.commands.spec_flags import add_spec_flags, spec_fields
from bench.run import runner, sla
from bench.run.options import RunOptions
from bench.run.registry import run_label
from bench.schema.record import RunRecord
from bench.schema.spec import RunSpec, SpecError


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "sla",
        help="highest server QPS whose p99 stays under a latency bound (LoadGen)",
        description="Find the highest load (queries per second, Poisson arrivals) at which "
        "MLPerf LoadGen's server scenario is VALID for a latency bound, by a bracketing "
        "search over server runs; every point is a run with its own record.",
    )
    add_spec_flags(p, "sla")
    g = p.add_argument_group("search")
    g.add_argument(
        "--start-qps",
        type=float,
        help="first load tried (default: half the capacity a short probe of full batches measures)",
    )
    g.add_argument(
        "--tolerance",
        type=float,
        default=sla.DEFAULT_TOLERANCE,
        help="stop when the bracket is narrower than this share (default "
        f"{sla.DEFAULT_TOLERANCE}, at least {sla.MIN_TOLERANCE})",
    )
    g.add_argument(
        "--max-points",
        type=int,
        default=sla.DEFAULT_MAX_POINTS,
        help=f"most runs, re-tests included (default {sla.DEFAULT_MAX_POINTS}, at least 2)",
    )
    g.add_argument(
        "--max-time",
        type=float,
        help="stop before a run that would end past this many seconds of search",
    )
    g.add_argument(
        "--max-point-time",
        type=float,
        default=sla.DEFAULT_MAX_POINT_S,
        help="never try a load so low that LoadGen's minimum query count takes longer than "
        f"this many seconds (default {sla.DEFAULT_MAX_POINT_S:g})",
    )
    g.add_argument(
        "--in-process",
        action="store_true",
        help="with --endpoint: also search the in-process model at the same bound and "
        "print both in one table",
    )
    add_run_options(p)


def cmd_sla(args: argparse.Namespace) -> int:
    options = run_options(args)
    if args.in_process and args.endpoint is None:
        raise SpecError("--in-process compares with a served model: give --endpoint")
    if args.max_points < 2:
        raise SpecError("--max-points must be at least 2 (a load and its confirmation)")
    if args.max_time is not None and args.max_time <= 0:
        raise SpecError("--max-time must be positive")
    if args.max_point_time <= 0:
        raise SpecError("--max-point-time must be positive")
    spec = runner.prepare(RunSpec(**spec_fields(args, "sla")))
    result = _search(args, spec, options)
    if result is None:
        return EXIT_FAILED_RUN
    if args.in_process:
        return _served_against_in_process(args, spec, result, options)
    return EXIT_OK if result.found_bracket else EXIT_FAILED_RUN


def _probe_start(spec: RunSpec, options: RunOptions) -> float:
    """The search's first load, from a short probe of the SUT's capacity."""
    probe = sla.probe_spec(spec)
    what = (
        f"a {probe.duration_s:g} s offline test of the endpoint"
        if probe.scenario == "offline"
        else f"{probe.iters} batches of {probe.batch}"
    )
    print(f"probe: {what} to estimate the starting load", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-probe-") as tmp:
        record = runner.run(probe, dataclasses.replace(options, out_dir=Path(tmp)))[0]
    capacity = sla.probe_capacity(record)
    start = sla.start_from_probe(record)
    print(
        f"probe: {capacity:,.1f} samples/s: starting at {start:g} QPS", file=sys.stderr, flush=True
    )
    return start


def _search(args: argparse.Namespace, spec: RunSpec, options: RunOptions) -> sla.SlaResult | None:
    """The search for ``spec``'s highest load under its bound, printed and written; None
    (said on stderr) when it stopped on a failed run."""

    def run_point(point: RunSpec) -> RunRecord:
        qps = point.target_qps or 0.0
        seconds = sla.point_seconds(point, qps)
        print(
            f"[{qps:g} QPS] expect at least {seconds:.0f} s: LoadGen runs "
            f"max(min duration {point.duration_s or 0:g} s, "
            f"min queries {sla.min_queries(point)} / {qps:g} QPS); {run_label(point)}",
            file=sys.stderr,
            flush=True,
        )
        return runner.run(point, options)[0]

    def show(point: sla.SlaPoint) -> None:
        verdict = "VALID" if point.valid else f"INVALID: {point.reason}"
        print(f"  {point.target_qps:g} QPS: LoadGen {verdict}", file=sys.stderr, flush=True)

    try:
        start = args.start_qps if args.start_qps is not None else _probe_start(spec, options)
        result = sla.search(
            spec,
            run_point,
            start_qps=start,
            tolerance=args.tolerance,
            max_points=args.max_points,
            max_point_s=args.max_point_time,
            max_time_s=args.max_time,
            on_point=show,
        )
    except sla.SlaError as exc:
        print(f"bench: the search stopped: {exc}", file=sys.stderr)
        return None
    print(sla.render(result))
    print(f"search: {sla.write_result(result, args.out)}")
    return result


def _served_against_in_process(
    args: argparse.Namespace, served_spec: RunSpec, served: sla.SlaResult, options: RunOptions
) -> int:
    """`bench sla --endpoint URL --in-process`: the same search in-process, then both
    answers in one table."""
    from bench.serve import compare as served_vs

    local_spec = runner.prepare(served_spec.replace(endpoint=None))
    print("the same search in-process:", file=sys.stderr, flush=True)
    local = _search(args, local_spec, options)
    if local is None:
        return EXIT_FAILED_RUN
    rows = [
        served_vs.figures("in-process", local, served_vs.best_record(local, args.out)),
        served_vs.figures(
            f"served {served_spec.endpoint}", served, served_vs.best_record(served, args.out)
        ),
    ]
    bound = f"p{served.latency_percentile:g} <= {served.latency_bound_ms:g} ms"
    print(f"\nIn-process against served, {served_spec.workload} on {served_spec.backend}:")
    print(served_vs.render(rows, bound))
    return EXIT_OK if served.found_bracket and local.found_bracket else EXIT_FAILED_RUN
