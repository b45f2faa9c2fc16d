"""The worker process: runs one spec in the Python environment its backend needs.

Started by :mod:`bench.run.runner` as ``python -m bench.run.worker run SPEC.json RESULT.json``. It
always tries to write a result record, also when the run fails or runs out of memory; the
parent treats a missing record as a crash of the worker.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any

from bench.analysis.table import device_name
from bench.run import envinfo, registry
from bench.run.loop import Measurement, measure
from bench.run.spec import RunSpec
from bench.run.stats import latency_summary, throughput
from bench.run.store import new_record
from bench.telemetry.devices import query_gpus, visible_gpus
from bench.telemetry.peaks import model_flops_utilization
from bench.telemetry.sampling import DEFAULT_INTERVAL_S
from bench.telemetry.session import Telemetry
from bench.telemetry.validity import validity_flags

#: Training does a forward and a backward pass, counted as twice the forward's FLOPs.
TRAIN_FLOPS_FACTOR = 3


#: Key of the telemetry time series in the worker's record; the parent moves it to a CSV.
ROWS_KEY = "_telemetry_rows"


def execute(
    spec: RunSpec,
    progress: bool = True,
    telemetry_interval_s: float | None = DEFAULT_INTERVAL_S,
    instance: str | None = None,
) -> dict[str, Any]:
    """Run ``spec`` (device already resolved) in this process and return its record.

    ``telemetry_interval_s`` of ``None`` turns sampling off.
    """
    all_gpus = query_gpus()
    visible = visible_gpus(all_gpus, os.environ.get("CUDA_VISIBLE_DEVICES"))
    record = new_record(spec, envinfo.collect(visible, instance=instance))
    entry = registry.lookup(spec.workload, spec.backend, spec.mode)
    workload = None
    telemetry: Telemetry | None = None
    try:
        cls = registry.load(entry.target)
        workload = cls(spec)
        record["environment"]["framework"] = workload.framework_info(spec.device)
        workload.setup()
        flops, flops_source = workload.flops_per_sample()
        record["workload"] = {
            "implementation": entry.target,
            "step_description": workload.step_description,
            "samples_per_step": workload.samples_per_step,
            "flops_forward_per_sample": flops,
            "flops_source": flops_source,
            "flops_factor": TRAIN_FLOPS_FACTOR if spec.mode == "train" else 1,
            "fp32_uses_tf32": workload.fp32_uses_tf32(),
            "details": None,
        }
        if telemetry_interval_s:
            telemetry = Telemetry.open(
                spec.device, record["environment"]["framework"], all_gpus, telemetry_interval_s
            )
        with telemetry or contextlib.nullcontext():
            measurement = measure(
                workload.step,
                workload.sync,
                warmup=spec.warmup,
                iters=spec.iters,
                duration_s=spec.duration_s,
                label=spec.label,
                progress=progress,
                on_mark=telemetry.mark if telemetry else None,
            )
        fill_measurement(record, measurement, workload.samples_per_step)
        fill_mfu(record)
        # after the run: some frameworks only know parameter shapes after a forward pass
        record["workload"]["details"] = workload.details()
        record["outcome"] = {"status": "ok", "message": None}
    except Exception as exc:
        oom = workload is not None and workload.is_oom(exc)
        record["outcome"] = {
            "status": "oom" if oom else "error",
            "message": f"{type(exc).__name__}: {exc}".splitlines()[0][:500],
            "traceback": traceback.format_exc(limit=20),
        }
    finally:
        if workload is not None:
            with contextlib.suppress(Exception):  # teardown must not mask the run's outcome
                workload.teardown()
    if telemetry is not None:
        samples = (record.get("timing") or {}).get("measured_samples") or 0
        record["telemetry"] = telemetry.summary(samples)
        record[ROWS_KEY] = telemetry.rows()
    elif not telemetry_interval_s:
        record["telemetry"] = {"available": False, "reason": "telemetry turned off"}
    record["validity"] = {"flags": validity_flags(record)}
    return record


def fill_mfu(record: dict[str, Any]) -> None:
    """Model-FLOPs utilization against the GPU's dense peak for the run's precision."""
    spec, tput = record["spec"], record["throughput"]
    name = device_name(record) if spec["device"].startswith("cuda") else None
    if name is None:
        tput["mfu"] = {"mfu": None, "peak_tflops": None, "basis": "CPU run: no peak table"}
        return
    tput["mfu"] = model_flops_utilization(
        tput.get("tflops_per_s"), name, spec["precision"], record["workload"]["fp32_uses_tf32"]
    )


def fill_measurement(record: dict[str, Any], m: Measurement, samples_per_step: int) -> None:
    """Put timings, throughput and latency statistics of ``m`` into ``record``."""
    samples = samples_per_step * m.iterations
    tput: dict[str, Any] = throughput(samples, m.iterations, m.window_s)
    work = record["workload"]
    flops = work["flops_forward_per_sample"] if work else None
    tput["tflops_per_s"] = (
        flops * work["flops_factor"] * tput["samples_per_s"] / 1e12 if flops is not None else None
    )
    record["timing"] = {
        "warmup_iters": record["spec"]["warmup"],
        "warmup_s": m.warmup_s,
        "measured_iters": m.iterations,
        "measured_samples": samples,
        "window_s": m.window_s,
        "marks_unix_s": m.marks,
    }
    record["throughput"] = tput
    record["latency"] = latency_summary(m.latencies_s)
    record["latencies_ms"] = [x * 1000.0 for x in m.latencies_s]


def framework_info(backend: str, device: str) -> dict[str, Any]:
    target = registry.FRAMEWORK_INFO.get(backend)
    if target is None:
        return {}
    return registry.load(target)(device)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run.worker")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run one spec and write its record")
    run.add_argument("spec", type=Path)
    run.add_argument("result", type=Path)
    run.add_argument("--no-progress", action="store_true")
    run.add_argument(
        "--telemetry-interval",
        type=float,
        default=DEFAULT_INTERVAL_S,
        help="seconds between telemetry samples; 0 turns sampling off",
    )
    run.add_argument("--instance", help="EC2 instance type to record instead of asking IMDS")
    info = sub.add_parser("info", help="print a backend's framework facts as JSON")
    info.add_argument("backend")
    info.add_argument("device")
    args = parser.parse_args(argv)

    if args.command == "info":
        json.dump(framework_info(args.backend, args.device), sys.stdout)
        return 0
    spec = RunSpec.from_dict(json.loads(args.spec.read_text()))
    record = execute(
        spec,
        progress=not args.no_progress,
        telemetry_interval_s=args.telemetry_interval or None,
        instance=args.instance,
    )
    args.result.write_text(json.dumps(record, allow_nan=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
