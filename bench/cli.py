"""The ``bench`` command line."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import signal
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from bench.analysis import table
from bench.analysis.compare import CompareError, Threshold, compare, gate_verdict, render
from bench.analysis.cost import PRICE_BASES
from bench.analysis.pricing import DEFAULT_BASIS, Pricing, PricingError, build_pricing
from bench.datasets import add_parser as add_data_parser
from bench.datasets import cmd_data
from bench.fleet import cli as fleet_cli
from bench.run import loadgen, runner, sla, suites
from bench.run.ec2 import instance_facts
from bench.run.record import ResultError, RunRecord
from bench.run.registry import backend_names, run_label, workload_names
from bench.run.sla import DEFAULT_MAX_POINTS, DEFAULT_TOLERANCE
from bench.run.spec import (
    ALL_GPUS,
    AUTO_PRECISION,
    AUTO_SHAPES,
    AUTO_TIMING,
    BATCH_SHAPES,
    COMPILE_MODES,
    MODES,
    ORT_PROVIDERS,
    PRECISIONS,
    SCENARIOS,
    TIMINGS,
    RunSpec,
    SpecError,
)
from bench.run.store import OutputError, check_writable, describe, load_records
from bench.schema.gpu import GpuInfo
from bench.serve import cli as serve_cli
from bench.telemetry.devices import default_gpus, resolve_device
from bench.telemetry.sampling import DEFAULT_INTERVAL_S

EXIT_OK, EXIT_FAILED_RUN, EXIT_USAGE = 0, 1, 2
WORKLOADS, BACKENDS = workload_names(), backend_names()
#: 128 + the signal's number, as shells report a process ended by it.
EXIT_SIGINT, EXIT_SIGTERM = 128 + signal.SIGINT, 128 + signal.SIGTERM


#: What argparse takes for a negative number (a value, not an option) when an option is
#: followed by it: its own patterns, and durations with a unit such as ``-1ms``.
_NEGATIVE_VALUE = re.compile(r"^-\d+$|^-\d*\.\d+$|^-(\d+\.?\d*|\.\d+)(ms|us|s)$")


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad input on one line, with exit code 2."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # `--batch-timeout -1ms` reaches the option's check instead of "expected one argument"
        self._negative_number_matcher = _NEGATIVE_VALUE

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _add_common(p: argparse.ArgumentParser, *, suite: bool) -> None:
    p.add_argument(
        "--precision",
        choices=(*PRECISIONS, AUTO_PRECISION),
        default=None if suite else "fp32",
        help="auto: bf16 where the GPU and backend have it (compute capability 8.0+), else "
        "fp16; fp32 on the CPU",
    )
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
    p.add_argument(
        "--profile-steps",
        type=int,
        default=0,
        metavar="N",
        help="after the window, profile N steps and keep the top kernels in the record",
    )
    _add_execution(p, suite=suite)


def _add_execution(p: argparse.ArgumentParser, *, suite: bool) -> None:
    g = p.add_argument_group("execution mode")
    g.add_argument(
        "--compile",
        choices=COMPILE_MODES,
        default=None if suite else "off",
        help="torch.compile mode of the PyTorch path (default off: eager); a compile "
        "failure fails the run",
    )
    g.add_argument(
        "--cuda-graphs",
        action="store_true",
        default=None if suite else False,
        help="capture the whole step in a CUDA graph on static inputs and replay it (GPU)",
    )
    g.add_argument(
        "--timing",
        choices=(*TIMINGS, AUTO_TIMING),
        default=None if suite else AUTO_TIMING,
        help="synchronized: wait for the device after every step (latency); pipelined: queue "
        "steps, time them with device events, synchronize once at the end (throughput); "
        "auto (default): pipelined for training, synchronized for inference",
    )


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


def dataset(text: str) -> str | None:
    """``synthetic`` (None) or a dataset path."""
    return None if text == "synthetic" else text


def gpu_count(text: str) -> int | str:
    """``all`` or a positive number of GPUs (ranks)."""
    if text == ALL_GPUS:
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a GPU count: {text!r} (a number or all)") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"--gpus must be 1 or more, not {value}")
    return value


def latency_ms(text: str) -> float:
    """``15ms``, ``15`` (milliseconds), ``0.015s`` or ``1500us`` as milliseconds."""
    value = text.strip().lower()
    for suffix, scale in (("ms", 1.0), ("us", 1e-3), ("s", 1e3)):
        if value.endswith(suffix):
            number, factor = value[: -len(suffix)], scale
            break
    else:
        number, factor = value, 1.0
    try:
        value_ms = float(number) * factor
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a latency: {text!r} (e.g. 15ms)") from None
    if value_ms < 0:
        raise argparse.ArgumentTypeError(f"a latency is 0 or more, not {text!r}")
    return value_ms


def _add_loadgen(p: argparse.ArgumentParser, *, sla: bool = False) -> None:
    g = p.add_argument_group("LoadGen scenarios")
    if not sla:
        g.add_argument("--target-qps", type=float, help="server: arrival rate; offline: hint")
    g.add_argument(
        "--latency-bound",
        type=latency_ms,
        required=sla,
        help="latency constraint, e.g. 15ms (server; expected latency for the streams)",
    )
    g.add_argument("--percentile", type=float, default=99.0, help="of the bound (default 99)")
    g.add_argument("--max-batch", type=int, help="largest batch the SUT forms (default --batch)")
    g.add_argument(
        "--batch-timeout",
        type=latency_ms,
        default=2.0,
        help="how long the SUT waits for a batch to fill after its first query (default 2ms)",
    )
    g.add_argument(
        "--batch-shapes",
        choices=(AUTO_SHAPES, *BATCH_SHAPES),
        default=AUTO_SHAPES,
        help="fixed: pad every batch to --max-batch; bucketed: to the next power of two; "
        "exact: no padding; auto (default): fixed only where a compiled or captured graph "
        "needs static shapes, else bucketed",
    )
    g.add_argument("--sample-count", type=int, default=256, help="samples staged for LoadGen")
    g.add_argument(
        "--endpoint",
        metavar="URL",
        help="send the queries to an Open Inference Protocol (KServe v2) server instead of "
        "an in-process model: grpc://host:port/model or http://host:port/model (bench serve "
        "starts one); --max-batch/--batch-timeout then are the server's to apply",
    )
    if sla:
        g.add_argument(
            "--in-process",
            action="store_true",
            help="with --endpoint: also search the in-process model at the same bound and "
            "print both in one table",
        )


def _add_accuracy(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("accuracy (scenarios evaluate and to-accuracy)")
    g.add_argument("--target", type=float, help="to-accuracy: the metric to reach (e.g. 0.75 mAP)")
    g.add_argument("--eval-every", type=int, default=100, help="steps between evaluations")
    g.add_argument("--eval-samples", type=int, help="test samples per evaluation (default all)")


def _add_strict(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--strict",
        action="store_true",
        help="fail (exit 2) on an unreadable or malformed result file instead of skipping it",
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
    p.add_argument(
        "--data",
        type=dataset,
        help="synthetic (default: seeded batches staged before timing) or a dataset the timed "
        "step reads through a loader: a VOC folder or RecordIO .rec (ssd), aclImdb (bert)",
    )
    p.add_argument(
        "--loader-workers", type=int, default=2, help="loader processes with --data (default 2)"
    )
    p.add_argument("--vocab", help="BERT with --data: vocab.txt (default: in --pretrained)")
    p.add_argument(
        "--gpus",
        type=gpu_count,
        metavar="N|all",
        help="data-parallel ranks (training) or replicas (inference), one per GPU, --batch "
        "per GPU; with --device cpu, N CPU ranks (gloo)",
    )
    p.add_argument(
        "--scenario",
        default="loop",
        choices=SCENARIOS,
        help="loop: a fixed loop of steps (default); single-stream, multi-stream, "
        "server, offline: MLPerf LoadGen issues and times the queries (inference only; "
        "--duration/--iters are then the test's minimum duration/query count, default 10 s); "
        "evaluate: the metric on --data's test split; to-accuracy: train until --target",
    )
    p.add_argument(
        "--save-weights",
        action="store_true",
        help="after a training run, save the weights where --pretrained can load them "
        "(<run id>.weights/ beside the record)",
    )
    _add_loadgen(p)
    _add_accuracy(p)
    _add_common(p, suite=False)

    p = sub.add_parser(
        "eval",
        help="accuracy on a dataset's test split (VOC07 mAP for ssd, accuracy for bert, "
        "SQuAD v1.1 F1 for bert-qa)",
        description="Evaluate a model on the test split of --data (SSD: VOC2007 test of a VOC "
        "folder, or a RecordIO file; BERT: aclImdb's test reviews; BERT QA: SQuAD's "
        "dev-v1.1.json) from --pretrained weights, in a worker like any run: the record holds "
        "the metric and the evaluation's samples/s.",
    )
    p.add_argument("--workload", required=True, choices=("ssd", "bert", "bert-qa"))
    p.add_argument("--backend", default="torch", choices=("torch", "mxnet"))
    p.add_argument(
        "--data", required=True, help="a VOC folder or RecordIO .rec, aclImdb, or SQuAD's folder"
    )
    p.add_argument("--pretrained", help="load weights from this local directory")
    p.add_argument(
        "--random-weights",
        action="store_true",
        help="score randomly initialised weights on purpose (without --pretrained); the "
        "record is flagged random_weights",
    )
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=128, help="BERT sequence length")
    p.add_argument("--image-size", type=int, default=512, help="SSD input side in pixels")
    p.add_argument("--vocab", help="BERT: vocab.txt (default: in --pretrained)")
    p.add_argument("--loader-workers", type=int, default=2)
    p.add_argument("--eval-samples", type=int, help="evaluate on at most this many samples")
    _add_common(p, suite=False)

    p = sub.add_parser(
        "sla",
        help="highest server QPS whose p99 stays under a latency bound (LoadGen)",
        description="Find the highest load (queries per second, Poisson arrivals) at which "
        "MLPerf LoadGen's server scenario is VALID for a latency bound, by a bracketing "
        "search over server runs; every point is a run with its own record.",
    )
    p.add_argument("--workload", required=True, choices=WORKLOADS)
    p.add_argument("--backend", default="torch", choices=BACKENDS)
    p.add_argument("--batch", type=int, default=1, help="default --max-batch")
    p.add_argument("--seq-len", type=int, default=128, help="BERT sequence length")
    p.add_argument("--image-size", type=int, default=512, help="SSD input side in pixels")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pretrained", help="load weights from this local directory")
    p.add_argument(
        "--start-qps",
        type=float,
        help="first load tried (default: half the capacity a short probe of full batches measures)",
    )
    p.add_argument(
        "--tolerance",
        type=float,
        default=DEFAULT_TOLERANCE,
        help=f"stop when the bracket is narrower than this share (default {DEFAULT_TOLERANCE}, "
        f"at least {sla.MIN_TOLERANCE})",
    )
    p.add_argument(
        "--max-points",
        type=int,
        default=DEFAULT_MAX_POINTS,
        help=f"most runs, re-tests included (default {DEFAULT_MAX_POINTS}, at least 2)",
    )
    p.add_argument(
        "--max-time",
        type=float,
        help="stop before a run that would end past this many seconds of search",
    )
    p.add_argument(
        "--max-point-time",
        type=float,
        default=sla.DEFAULT_MAX_POINT_S,
        help="never try a load so low that LoadGen's minimum query count takes longer than "
        f"this many seconds (default {sla.DEFAULT_MAX_POINT_S:g})",
    )
    _add_loadgen(p, sla=True)
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

    serve_cli.add_parser(sub, latency_ms)

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
    _add_strict(p)
    p.add_argument("--format", default="github", help="tabulate format (github, plain, ...)")
    _add_wide(p)
    fleet_cli.register(sub)
    add_data_parser(sub)
    return parser


class Terminated(BaseException):
    """SIGTERM, raised where the process is so that cleanup runs as for Ctrl-C."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    # Python leaves SIGINT ignored when it started ignored (a shell's background job):
    # Ctrl-C, or kill -INT, must still stop a run and clean up
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        code: int = COMMANDS[args.command](args)
    except (SpecError, ResultError, PricingError, CompareError, OutputError) as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except runner.RecordNotSaved as exc:
        _show_unsaved(exc.record)
        print(f"bench: error: {exc}; its figures are printed above", file=sys.stderr)
        return EXIT_FAILED_RUN
    except OSError as exc:  # a file the command reads or writes (after the checks up front)
        print(f"bench: error: {describe(exc)}", file=sys.stderr)
        # past their checks, the run commands have started runs: those failed
        return EXIT_FAILED_RUN if args.command in RUN_COMMANDS else EXIT_USAGE
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return EXIT_SIGINT
    except Terminated:
        print("bench: terminated", file=sys.stderr)
        return EXIT_SIGTERM
    except BrokenPipeError:
        # the reader of our output (head, less) left: not an error; keep exit from failing
        # on the flush of a closed pipe
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)
    return code


def _show_unsaved(record: RunRecord) -> None:
    """A run's figures on stdout when its record could not be stored: its table row, and
    the whole record as JSON (what the file would have held) to keep by redirection."""
    print(table.render([record]))
    print(json.dumps(record.to_dict(), allow_nan=False))


def _run_options(args: argparse.Namespace) -> runner.RunOptions:
    if args.telemetry_interval <= 0:
        raise SpecError("--telemetry-interval must be positive (use --no-telemetry to turn off)")
    if args.timeout is not None and args.timeout <= 0:
        raise SpecError("--timeout must be positive")
    if args.profile_steps < 0:
        raise SpecError("--profile-steps must be 0 or more")
    if args.instance is not None:
        try:
            instance_facts(override=args.instance)
        except ValueError as exc:
            raise SpecError(str(exc)) from exc
    check_writable(args.out, "--out")
    return runner.RunOptions(
        out_dir=args.out,
        # bars redraw a line with carriage returns: in a piped log they would be noise
        progress=not args.no_progress and sys.stderr.isatty(),
        timeout_s=args.timeout,
        telemetry_interval_s=None if args.no_telemetry else args.telemetry_interval,
        instance=args.instance,
        profile_steps=args.profile_steps,
        save_weights=getattr(args, "save_weights", False),
    )


def _exit_code(records: list[RunRecord]) -> int:
    return EXIT_OK if all(r.ok for r in records) else EXIT_FAILED_RUN


def _spec(args: argparse.Namespace, **fields: Any) -> RunSpec:
    for name in RUN_FIELDS:
        if hasattr(args, name):
            fields.setdefault(name, getattr(args, name))
    fields.update(
        latency_bound_ms=args.latency_bound,
        latency_percentile=args.percentile,
        max_batch=args.max_batch,
        batch_timeout_ms=args.batch_timeout,
        batch_shapes=args.batch_shapes,
        sample_count=args.sample_count,
    )
    if args.duration is not None:
        fields.update(iters=None, duration_s=args.duration)
    elif args.iters is not None:
        fields["iters"] = args.iters
    elif fields.get("scenario", "loop") != "loop":
        fields.update(iters=None, duration_s=LOADGEN_DEFAULT_DURATION_S)
    return RunSpec(**fields)


def cmd_run(args: argparse.Namespace) -> int:
    options = _run_options(args)
    spec = runner.prepare(
        _spec(
            args,
            target_qps=args.target_qps,
            target_metric=args.target,
            eval_every=args.eval_every,
            eval_samples=args.eval_samples,
        )
    )
    runner.check_save_weights(spec, options.save_weights)
    if spec.uses_loadgen:
        loadgen.check_spec(spec)
    record, path = runner.run(spec, options)
    print(table.render([record]))
    print(f"result: {path}")
    weights = record.execution.details.get("weights")
    if weights:
        print(f"weights: {path.parent / weights}")
    return _exit_code([record])


def cmd_eval(args: argparse.Namespace) -> int:
    if (args.pretrained is None) != args.random_weights:
        raise SpecError(
            "bench eval scores trained weights: give --pretrained DIR (or --random-weights "
            "to score an untrained model on purpose)"
            if args.pretrained is None
            else "--random-weights and --pretrained exclude each other"
        )
    options = _run_options(args)
    spec = RunSpec(
        workload=args.workload,
        backend=args.backend,
        mode="infer",
        scenario="evaluate",
        batch=args.batch,
        seq_len=args.seq_len,
        image_size=args.image_size,
        data=args.data,
        vocab=args.vocab,
        loader_workers=args.loader_workers,
        pretrained=args.pretrained,
        eval_samples=args.eval_samples,
        precision=args.precision,
        device=args.device,
        warmup=0,
        iters=1,
        compile=args.compile,
        timing=args.timing,
    )
    record, path = runner.run(runner.prepare(spec), options)
    print(table.render([record]))
    result = record.scenario.result if record.scenario is not None else None
    if result:
        print(f"{result['metric']}: {result['value']:.4f} on {result['samples']} samples")
    print(f"result: {path}")
    return _exit_code([record])


def cmd_suite(args: argparse.Namespace) -> int:
    options = _run_options(args)
    gpus = default_gpus()
    overrides = {
        key: value
        for key, value in (
            ("precision", args.precision),
            ("warmup", args.warmup),
            ("iters", args.iters),
            ("duration_s", args.duration),
            ("include_h2d", args.include_h2d),
            ("compile", args.compile),
            ("cuda_graphs", args.cuda_graphs),
            ("timing", args.timing),
        )
        if value is not None
    }
    backends = tuple(args.backend or (b for b in BACKENDS if runner.backend_available(b)))
    specs, skipped = suites.plan(
        args.name,
        device=resolve_device(args.device or "auto", gpus),
        gpus=gpus,
        backends=backends,
        ort_provider=args.ort_provider,
        **overrides,
    )
    for line in skipped:
        print(line, file=sys.stderr)
    if args.dry_run:
        for spec in specs:
            print(run_label(spec))
        device = resolve_device(args.device or "auto", gpus)
        for spec, start in suites.sla_specs(
            args.name, gpu=device.startswith("cuda"), backends=backends, device=device
        ):
            bound = f"p{spec.latency_percentile:g}<={spec.latency_bound_ms:g}ms"
            print(f"sla:{spec.workload}_{spec.backend}_{bound}_from{start:g}qps")
        return EXIT_OK
    records = runner.run_all(specs, options)
    print(table.render(records))
    failed = sum(not r.ok for r in records)
    print(f"{len(records) - failed} of {len(records)} runs ok; results in {args.out}")
    for line in skipped:
        print(line)
    searches_ok = _suite_searches(args, options, gpus, backends)
    return _exit_code(records) if searches_ok else EXIT_FAILED_RUN


def _suite_searches(
    args: argparse.Namespace,
    options: runner.RunOptions,
    gpus: list[GpuInfo],
    backends: tuple[str, ...],
) -> bool:
    """The suite's SLA searches, if it has any; False when one failed or did not converge."""
    device = resolve_device(args.device or "auto", gpus)
    ok = True
    for spec, start in suites.sla_specs(
        args.name, gpu=device.startswith("cuda"), backends=backends, device=device
    ):
        try:
            spec = runner.prepare(spec, gpus)
        except SpecError as exc:
            print(f"skipped the SLA search of {run_label(spec)}: {exc}")
            continue
        print(f"SLA search: {spec.workload} on {spec.backend}", file=sys.stderr, flush=True)
        try:
            result = sla.search(spec, lambda s: runner.run(s, options)[0], start_qps=start)
        except sla.SlaError as exc:
            print(f"SLA search of {run_label(spec)} stopped: {exc}")
            ok = False
            continue
        print(f"\nSLA search, {spec.workload} on {spec.backend}:\n{sla.render(result)}")
        print(f"search: {sla.write_result(result, args.out)}")
        ok = ok and result.found_bracket
    return ok


def cmd_sla(args: argparse.Namespace) -> int:
    options = _run_options(args)
    if args.in_process and args.endpoint is None:
        raise SpecError("--in-process compares with a served model: give --endpoint")
    if args.max_points < 2:
        raise SpecError("--max-points must be at least 2 (a load and its confirmation)")
    if args.max_time is not None and args.max_time <= 0:
        raise SpecError("--max-time must be positive")
    if args.max_point_time <= 0:
        raise SpecError("--max-point-time must be positive")
    spec = _spec(args, mode="infer", scenario="server", target_qps=1.0)
    if args.duration is None and args.iters is None:
        spec = spec.replace(iters=None, duration_s=SLA_DEFAULT_DURATION_S)
    spec = runner.prepare(spec)
    result = _sla_search(args, spec, options)
    if result is None:
        return EXIT_FAILED_RUN
    if args.in_process:
        return _served_against_in_process(args, spec, result, options)
    return EXIT_OK if result.found_bracket else EXIT_FAILED_RUN


def _probe_start(spec: RunSpec, options: runner.RunOptions) -> float:
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


def _sla_search(
    args: argparse.Namespace, spec: RunSpec, options: runner.RunOptions
) -> sla.SlaResult | None:
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
    args: argparse.Namespace,
    served_spec: RunSpec,
    served: sla.SlaResult,
    options: runner.RunOptions,
) -> int:
    """`bench sla --endpoint URL --in-process`: the same search in-process, then both
    answers in one table."""
    from bench.serve import compare as served_vs

    local_spec = runner.prepare(served_spec.replace(endpoint=None))
    print("the same search in-process:", file=sys.stderr, flush=True)
    local = _sla_search(args, local_spec, options)
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


def cmd_env(args: argparse.Namespace) -> int:
    print(json.dumps(runner.environment_report(default_gpus()), indent=2))
    return EXIT_OK


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


def cmd_monitor(args: argparse.Namespace) -> int:
    if args.interval <= 0:
        raise SpecError("--interval must be positive")
    if args.count is not None and args.count < 1:
        raise SpecError("--count must be at least 1")
    from bench.telemetry.monitor import run_monitor

    return run_monitor(args.interval, args.count)


#: Commands that start runs (an I/O error after their checks fails a run: exit 1).
RUN_COMMANDS = frozenset({"run", "eval", "sla", "suite"})

#: A LoadGen scenario's minimum duration when neither --duration nor --iters is given.
LOADGEN_DEFAULT_DURATION_S = 10.0
#: An SLA search's runs: LoadGen's minimum duration (early stopping sets the query count).
SLA_DEFAULT_DURATION_S = 5.0

#: Spec fields `bench run` takes from its options as they are.
RUN_FIELDS = (
    "scenario",
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
    "compile",
    "cuda_graphs",
    "timing",
    "gpus",
    "data",
    "loader_workers",
    "vocab",
    "endpoint",
)

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "eval": cmd_eval,
    "sla": cmd_sla,
    "compare": cmd_compare,
    "report": cmd_report,
    "run": cmd_run,
    "suite": cmd_suite,
    "env": cmd_env,
    "show": cmd_show,
    "monitor": cmd_monitor,
    "fleet": fleet_cli.cmd_fleet,
    "data": cmd_data,
    "serve": serve_cli.cmd_serve,
}
