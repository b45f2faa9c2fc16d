"""``bench run``, its alias ``bench eval`` (``run --scenario evaluate``) and ``bench suite``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from bench.analysis import table
from bench.commands.exits import EXIT_FAILED_RUN, EXIT_OK
from bench.commands.run_options import add_run_options, add_save_weights, run_options
from bench.commands.spec_flags import add_spec_flags, given_flags, spec_fields
from bench.run import loadgen, registry, runner, sla, suites
from bench.run.options import RunOptions
from bench.run.registry import run_label
from bench.schema.gpu import GpuInfo
from bench.schema.record import RunRecord
from bench.schema.spec import RunSpec, SpecError
from bench.telemetry.devices import default_gpus, resolve_device


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Add ``run`` and ``eval``."""
    p = sub.add_parser("run", help="run one benchmark", description="Run one benchmark.")
    add_spec_flags(p, "run")
    add_save_weights(p)
    add_run_options(p)

    p = sub.add_parser(
        "eval",
        help="accuracy on a dataset's test split (VOC07 mAP for ssd, accuracy for bert, "
        "SQuAD v1.1 F1 for bert-qa)",
        description="Evaluate a model on the test split of --data (SSD: VOC2007 test of a VOC "
        "folder, or a RecordIO file; BERT: aclImdb's test reviews; BERT QA: SQuAD's "
        "dev-v1.1.json) from --pretrained weights, in a worker like any run: the record holds "
        "the metric and the evaluation's samples/s. The same as bench run --scenario evaluate, "
        "with the defaults of an evaluation (one pass, no warm-up) and trained weights asked "
        "for.",
    )
    add_spec_flags(p, "eval")
    p.add_argument(
        "--random-weights",
        action="store_true",
        help="score randomly initialised weights on purpose (without --pretrained); the "
        "record is flagged random_weights",
    )
    add_run_options(p)


def register_suite(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "suite",
        help="run a named list of benchmarks",
        description="Run a named suite. "
        + " ".join(f"{s.name}: {s.description}." for s in suites.SUITES.values())
        + " The options below override the suite's own values where given.",
    )
    p.add_argument("name", choices=sorted(suites.SUITES))
    p.add_argument(
        "--backend",
        action="append",
        choices=registry.backend_names(),
        help="only these backends (repeatable; default: all available)",
    )
    p.add_argument("--dry-run", action="store_true", help="print the runs and exit")
    add_spec_flags(p, "suite", overrides=True)
    add_run_options(p)


def cmd_run(args: argparse.Namespace) -> int:
    """``bench run``, and ``bench eval``: the same run with an evaluation's defaults."""
    evaluation = args.command == "eval"
    if evaluation and (args.pretrained is None) != args.random_weights:
        raise SpecError(
            "bench eval scores trained weights: give --pretrained DIR (or --random-weights "
            "to score an untrained model on purpose)"
            if args.pretrained is None
            else "--random-weights and --pretrained exclude each other"
        )
    options = run_options(args)
    spec = runner.prepare(RunSpec(**spec_fields(args, args.command)))
    if spec.uses_loadgen:
        loadgen.check_spec(spec)
    record, path = runner.run(spec, options)
    print(table.render([record]))
    result = record.scenario.result if record.scenario is not None else None
    if evaluation and result:
        print(f"{result['metric']}: {result['value']:.4f} on {result['samples']} samples")
    print(f"result: {path}")
    weights = record.execution.details.get("weights")
    if weights:
        print(f"weights: {path.parent / weights}")
    return exit_code([record])


def exit_code(records: list[RunRecord]) -> int:
    return EXIT_OK if all(r.ok for r in records) else EXIT_FAILED_RUN


def cmd_suite(args: argparse.Namespace) -> int:
    options = run_options(args)
    gpus = default_gpus()
    overrides = given_flags(args, "suite")
    device = resolve_device(overrides.pop("device", "auto"), gpus)
    ort_provider = overrides.pop("ort_provider", None)
    names = registry.backend_names()
    backends = tuple(args.backend or (b for b in names if runner.backend_available(b)))
    specs, skipped = suites.plan(
        args.name,
        device=device,
        gpus=gpus,
        backends=backends,
        ort_provider=ort_provider,
        **overrides,
    )
    for line in skipped:
        print(line, file=sys.stderr)
    sla_specs = suites.sla_specs(
        args.name, gpu=device.startswith("cuda"), backends=backends, device=device
    )
    if args.dry_run:
        for spec in specs:
            print(run_label(spec))
        for spec, start in sla_specs:
            bound = f"p{spec.latency_percentile:g}<={spec.latency_bound_ms:g}ms"
            print(f"sla:{spec.workload}_{spec.backend}_{bound}_from{start:g}qps")
        return EXIT_OK
    records = runner.run_all(specs, options)
    print(table.render(records))
    failed = sum(not r.ok for r in records)
    print(f"{len(records) - failed} of {len(records)} runs ok; results in {args.out}")
    for line in skipped:
        print(line)
    searches_ok = _suite_searches(sla_specs, options, gpus, args)
    return exit_code(records) if searches_ok else EXIT_FAILED_RUN


def _suite_searches(
    searches: list[tuple[RunSpec, float]],
    options: RunOptions,
    gpus: list[GpuInfo],
    args: argparse.Namespace,
) -> bool:
    """The suite's SLA searches, if it has any; False when one failed or did not converge."""
    ok = True
    for spec, start in searches:
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
