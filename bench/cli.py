"""The ``bench`` command line."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any, NoReturn

from bench.analysis import prices, table
from bench.analysis.compare import CompareError, Pricing, Threshold, compare, load_runs, render
from bench.analysis.cost import PRICE_BASES
from bench.run import envinfo, registry, runner, suites
from bench.run.ec2 import instance_facts
from bench.run.spec import (
    BACKENDS,
    MODES,
    ORT_PROVIDERS,
    PRECISIONS,
    WORKLOADS,
    RunSpec,
    SpecError,
)
from bench.run.store import ResultError, load_record, result_files
from bench.telemetry.devices import default_gpus, resolve_device
from bench.telemetry.sampling import DEFAULT_INTERVAL_S

EXIT_OK, EXIT_FAILED_RUN, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad input on one line, with exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _add_common(p: argparse.ArgumentParser, *, suite: bool) -> None:
    p.add_argument("--precision", choices=PRECISIONS, default=None if suite else "fp32")
    p.add_argument("--device", default=None if suite else "auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--warmup", type=int, default=None if suite else 5, help="warm-up iterations")
    window = p.add_mutually_exclusive_group()
    window.add_argument("--iters", type=int, help="measured iterations (default 20)")
    window.add_argument("--duration", type=float, help="measure for this many seconds instead")
    p.add_argument(
        "--include-h2d",
        action="store_true",
        default=None if suite else False,
        help="time the host-to-device copy of the batch in every step",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=runner.DEFAULT_OUT,
        help="directory for result files (default: results/runs)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "--timeout", type=float, default=None, help="kill a run's worker after this many seconds"
    )
    p.add_argument(
        "--telemetry-interval",
        type=float,
        default=DEFAULT_INTERVAL_S,
        help=f"seconds between GPU telemetry samples (default {DEFAULT_INTERVAL_S})",
    )
    p.add_argument("--no-telemetry", action="store_true", help="do not sample the GPU or host")
    p.add_argument(
        "--ort-provider",
        choices=ORT_PROVIDERS,
        default=None if suite else "auto",
        help="ONNX Runtime execution provider (default auto: TensorRT, CUDA, CPU)",
    )
    p.add_argument("--instance", help="EC2 instance type to record (default: asked of IMDS on EC2)")


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
        default="instance",
        help="instance: the whole instance's price (default); used: the share "
        "of a multi-GPU instance's GPUs the run used",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="bench",
        description="Benchmark SSD-ResNet50 and BERT-base training and inference on a GPU or CPU.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="run one benchmark", description="Run one benchmark.")
    p.add_argument("--workload", required=True, choices=WORKLOADS)
    p.add_argument("--backend", default="torch", choices=BACKENDS)
    p.add_argument("--mode", default="infer", choices=MODES)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--seq-len", type=int, default=128, help="BERT sequence length")
    p.add_argument("--image-size", type=int, default=512, help="SSD input side in pixels")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic batch and weights")
    p.add_argument("--pretrained", help="load weights from this local directory")
    _add_common(p, suite=False)

    p = sub.add_parser(
        "suite",
        help="run a named list of benchmarks",
        description="Run a named suite. "
        + " ".join(f"{s.name}: {s.description}." for s in suites.SUITES.values()),
    )
    p.add_argument("name", choices=sorted(suites.SUITES))
    p.add_argument(
        "--backend",
        action="append",
        choices=BACKENDS,
        help="only these backends (repeatable; default: all available)",
    )
    p.add_argument("--dry-run", action="store_true", help="print the runs and exit")
    _add_common(p, suite=True)

    sub.add_parser(
        "env",
        help="print the environment record as JSON",
        description="Print the environment record stored with each result.",
    )

    p = sub.add_parser(
        "compare",
        help="compare runs from any machines on cost-performance; gate on regressions",
        description="Group runs by the work they measured, price them by instance type, "
        "sort by dollars per million samples, and compare them with baseline runs. With "
        "--fail-on, exit 1 when a run regressed against its baseline (for CI gates).",
    )
    p.add_argument("paths", nargs="+", type=Path, help="result files or directories")
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

    p = sub.add_parser(
        "report",
        help="Markdown, HTML (plots embedded) and CSV report of runs",
        description="Build report.md, a self-contained report.html and runs.csv from result "
        "files or directories: throughput by instance and backend, cost per million samples, "
        "the latency-versus-cost frontier, and telemetry over time.",
    )
    p.add_argument("paths", nargs="+", type=Path, help="result files or directories")
    p.add_argument("--out", type=Path, required=True, help="directory for the report")
    p.add_argument("--title", default="Benchmark report")
    _add_pricing(p)

    p = sub.add_parser(
        "monitor",
        help="live view of the GPUs (like watch nvidia-smi)",
        description="Show GPU utilization, memory, power, clocks, temperature and throttle "
        "reasons, refreshed in place, until Ctrl-C.",
    )
    p.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes")
    p.add_argument("--count", type=int, help="stop after this many refreshes")

    p = sub.add_parser(
        "show",
        help="print stored results as a table",
        description="Print result files (or directories of them) as a table.",
    )
    p.add_argument("paths", nargs="+", type=Path)
    p.add_argument("--format", default="github", help="tabulate format (github, plain, ...)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except SpecError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ResultError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130


def _check_run_options(args: argparse.Namespace) -> None:
    if args.telemetry_interval <= 0:
        raise SpecError("--telemetry-interval must be positive (use --no-telemetry to turn off)")
    if args.timeout is not None and args.timeout <= 0:
        raise SpecError("--timeout must be positive")
    if args.instance is not None:
        try:
            instance_facts(override=args.instance)
        except ValueError as exc:
            raise SpecError(str(exc)) from exc


def _run(spec: RunSpec, args: argparse.Namespace) -> tuple[dict[str, Any], Path]:
    return runner.run(
        spec,
        args.out,
        progress=not args.no_progress,
        timeout_s=args.timeout,
        telemetry_interval_s=None if args.no_telemetry else args.telemetry_interval,
        instance=args.instance,
    )


def cmd_run(args: argparse.Namespace) -> int:
    _check_run_options(args)
    fields: dict[str, Any] = {
        name: getattr(args, name)
        for name in (
            "workload",
            "backend",
            "mode",
            "batch",
            "precision",
            "device",
            "warmup",
            "seq_len",
            "image_size",
            "include_h2d",
            "seed",
            "pretrained",
            "ort_provider",
        )
    }
    if args.duration is not None:
        fields.update(iters=None, duration_s=args.duration)
    elif args.iters is not None:
        fields["iters"] = args.iters
    spec = RunSpec(**fields)
    spec = runner.prepare(spec)
    record, path = _run(spec, args)
    print(table.render([record]))
    print(f"result: {path}")
    return EXIT_OK if record["outcome"]["status"] == "ok" else EXIT_FAILED_RUN


def cmd_suite(args: argparse.Namespace) -> int:
    _check_run_options(args)
    gpus = default_gpus()
    device = resolve_device(args.device or "auto", gpus)
    overrides: dict[str, Any] = {"device": device}
    for key, value in (
        ("precision", args.precision),
        ("warmup", args.warmup),
        ("iters", args.iters),
        ("duration_s", args.duration),
        ("include_h2d", args.include_h2d),
    ):
        if value is not None:
            overrides[key] = value
    backends = tuple(args.backend or (b for b in BACKENDS if runner.backend_available(b)))
    specs, skipped = [], []
    for spec in suites.suite_specs(
        args.name,
        gpu=device.startswith("cuda"),
        backends=backends,
        ort_provider=args.ort_provider,
        **overrides,
    ):
        try:
            specs.append(runner.prepare(spec, gpus))
        except SpecError as exc:  # e.g. a precision or GPU one backend cannot do
            skipped.append(f"skipped {spec.label}: {exc}")
    if not specs:
        raise SpecError(skipped[0] if skipped else f"suite {args.name} has no runnable runs")
    for line in skipped:
        print(line, file=sys.stderr)
    if args.dry_run:
        for s in specs:
            print(s.label)
        return EXIT_OK
    records = []
    for i, spec in enumerate(specs, 1):
        print(f"[{i}/{len(specs)}] {spec.label}", file=sys.stderr, flush=True)
        record, _ = _run(spec, args)
        status = record["outcome"]["status"]
        if status != "ok":
            print(f"  {status}: {record['outcome']['message']}", file=sys.stderr)
        records.append(record)
    print(table.render(records))
    failed = sum(r["outcome"]["status"] != "ok" for r in records)
    print(f"{len(records) - failed} of {len(records)} runs ok; results in {args.out}")
    for line in skipped:
        print(line)
    return EXIT_OK if not failed else EXIT_FAILED_RUN


def cmd_env(args: argparse.Namespace) -> int:
    gpus = default_gpus()
    device = resolve_device("auto", gpus)
    record = envinfo.collect(gpus)
    record["frameworks"] = {}
    for backend, env in sorted({(b, e.env) for (_, b), e in registry.REGISTRY.items()}):
        try:
            python = runner.python_for(env)
        except SpecError as exc:
            record["frameworks"][backend] = {"available": False, "reason": str(exc)}
            continue
        out = subprocess.run(
            [str(python), "-m", "bench.run.worker", "info", backend, device],
            capture_output=True,
            text=True,
            cwd=envinfo.PROJECT_ROOT,
        )
        record["frameworks"][backend] = (
            json.loads(out.stdout)
            if out.returncode == 0
            else {"available": False, "reason": out.stderr.strip().splitlines()[-1:]}
        )
    print(json.dumps(record, indent=2))
    return EXIT_OK


def cmd_show(args: argparse.Namespace) -> int:
    records = [load_record(p) for p in result_files(args.paths)]
    if not records:
        raise ResultError(f"no result files under {', '.join(map(str, args.paths))}")
    print(table.render(records, fmt=args.format))
    return EXIT_OK


def pricing_from_args(args: argparse.Namespace) -> Pricing:
    """The catalogue with the user's price files and spot prices, and the local price."""
    try:
        catalogue = prices.merge(prices.load_catalogue(), *args.prices)
        for item in args.spot:
            name, sep, value = item.partition("=")
            entry = prices.lookup(catalogue, name)
            if not sep or entry is None:
                raise SpecError(f"--spot {item}: use TYPE=PRICE with a catalogue instance type")
            catalogue[entry.instance_type] = prices.with_price(
                entry, _positive(value, "--spot price"), "given with --spot"
            )
    except prices.PriceError as exc:
        raise SpecError(str(exc)) from exc
    local = None
    if args.price_per_hour is not None:
        local = prices.local_price(_positive(args.price_per_hour, "--price-per-hour"))
    instances: dict[str, str] = {}
    for item in args.price_instance:
        hardware, sep, name = item.rpartition("=")
        entry = prices.lookup(catalogue, name)
        if entry is None:
            raise SpecError(f"--instance {item}: {name} is not in the price catalogue")
        instances[hardware if sep else "*"] = entry.instance_type
    return Pricing(catalogue, local=local, instances=instances, basis=args.price_basis)


def _positive(value: str | float, what: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise SpecError(f"{what} must be a number, not {value!r}") from None
    if not number > 0:
        raise SpecError(f"{what} must be positive")
    return number


def cmd_compare(args: argparse.Namespace) -> int:
    try:
        thresholds = [Threshold.parse(t) for t in args.fail_on]
    except CompareError as exc:
        raise SpecError(str(exc)) from exc
    if thresholds and not args.baseline:
        raise SpecError("--fail-on needs --baseline")
    pricing = pricing_from_args(args)
    runs = load_runs(args.paths)
    if not runs:
        raise ResultError(f"no result files under {', '.join(map(str, args.paths))}")
    baselines = load_runs(args.baseline) if args.baseline else []
    result = compare(runs, pricing, baselines, thresholds)
    print(render(result, args.format))
    if not thresholds:
        return EXIT_OK
    if result.regressions:
        print(f"\n{len(result.regressions)} regression(s):")
        for line in result.regressions:
            print(f"- {line}")
        return EXIT_FAILED_RUN
    if result.gated == 0:
        print("\nregression gate: no run matched a baseline run, nothing was checked")
        return EXIT_FAILED_RUN
    print(f"\nregression gate: {result.gated} run(s) within limits")
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    pricing = pricing_from_args(args)
    runs = load_runs(args.paths)
    if not runs:
        raise ResultError(f"no result files under {', '.join(map(str, args.paths))}")
    from bench.analysis.report import build

    paths = build(compare(runs, pricing), args.out, args.title)
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return EXIT_OK


def cmd_monitor(args: argparse.Namespace) -> int:
    if args.interval <= 0:
        raise SpecError("--interval must be positive")
    if args.count is not None and args.count < 1:
        raise SpecError("--count must be at least 1")
    from bench.telemetry.monitor import run_monitor

    return run_monitor(args.interval, args.count)


COMMANDS = {
    "compare": cmd_compare,
    "report": cmd_report,
    "run": cmd_run,
    "suite": cmd_suite,
    "env": cmd_env,
    "show": cmd_show,
    "monitor": cmd_monitor,
}
