"""The worker process: runs one spec in the Python environment its backend needs.

Started by :mod:`bench.run.runner` as
``python -m bench.run.worker run SPEC.json OPTIONS.json RESULT.json``, the spec and the run
options (:class:`bench.run.options.RunOptions`) as JSON. It writes the record
to RESULT.json as it goes (after the environment is known, after set-up, and at the end),
so that the parent can build a crash record from what the worker had already collected.
The telemetry time series goes straight to ``<out_dir>/<run_id>.telemetry.csv``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.run import envinfo, registry
from bench.run.distributed import rank_device, rank_env, rank_result_path
from bench.run.loop import Measurement
from bench.run.options import RunOptions
from bench.run.scenarios import RunContext, scenario_for
from bench.run.stats import latency_summary, throughput
from bench.run.store import describe, new_record, weights_dir_name, write_json_atomic
from bench.run.validity import validity_flags
from bench.run.workload import Workload
from bench.schema.record import (
    DataFacts,
    Execution,
    Outcome,
    RunRecord,
    Timing,
    WorkloadFacts,
)
from bench.schema.spec import RunSpec
from bench.schema.telemetry import Mfu, TelemetrySummary
from bench.telemetry.devices import query_gpus, visible_gpus
from bench.telemetry.peaks import model_flops_utilization
from bench.telemetry.sampling import DEFAULT_INTERVAL_S
from bench.telemetry.session import Telemetry, write_csv

#: Training does a forward and a backward pass; the backward costs about twice the forward,
#: so a training step counts as three times the forward FLOPs.
TRAIN_FLOPS_FACTOR = 3


def execute(
    spec: RunSpec,
    *,
    progress: bool = True,
    telemetry_interval_s: float | None = DEFAULT_INTERVAL_S,
    instance: str | None = None,
    out_dir: Path | None = None,
    checkpoint: Path | None = None,
    clock: Callable[[], float] = time.perf_counter,
    profile_steps: int = 0,
    save_weights: bool = False,
) -> RunRecord:
    """Run ``spec`` (device already resolved) in this process and return its record.

    ``telemetry_interval_s`` of ``None`` turns sampling off. With ``out_dir`` the telemetry
    time series is written there; with ``checkpoint`` the record so far is written there at
    each stage. ``profile_steps`` steps run under the framework's profiler after the
    measured window, and the record keeps the top kernels. ``save_weights`` (with
    ``out_dir``; the runner checked that the run may save, in
    :func:`bench.run.capabilities.check_save_weights`) saves the trained weights to
    ``out_dir/<run_id>.weights/`` in the layout ``--pretrained`` reads (rank 0 of several)
    and names that folder in ``record.execution.details["weights"]``.
    """
    if save_weights and out_dir is None:
        raise ValueError("save_weights needs out_dir")

    ranked = rank_env(os.environ)
    if ranked is not None:
        # one of several ranks started by torchrun: its own device, record and progress
        spec = spec.replace(device=rank_device(spec, ranked.local_rank))
        progress = progress and ranked.rank == 0
        if checkpoint is not None:
            checkpoint = rank_result_path(checkpoint, ranked.rank)

    def save() -> None:
        if checkpoint is not None:
            write_json_atomic(record.to_dict(), checkpoint)

    all_gpus = query_gpus()
    visible = visible_gpus(all_gpus, os.environ.get("CUDA_VISIBLE_DEVICES"))
    record = new_record(spec, envinfo.collect(visible, instance=instance))
    save()
    entry = registry.lookup(spec.workload, spec.backend, spec.mode)
    info = registry.workload_info(spec.workload)
    workload: Workload | None = None
    telemetry: Telemetry | None = None
    try:
        if spec.endpoint is not None:  # the model is the server's: a client here
            workload = registry.load(registry.ENDPOINT_WORKLOAD)(spec)
        else:
            workload = registry.workload_class(entry)(spec)
            record.environment.framework = registry.framework_info(spec.backend, spec.device)
        t_setup = clock()
        workload.setup()
        record.execution = Execution(
            details=workload.execution_details(),
            one_off_s={"setup_s": clock() - t_setup, **workload.one_off_s},
        )
        flops, flops_source = info.flops(spec)
        record.workload = WorkloadFacts(
            implementation=entry.target,
            step_description=workload.step_description,
            samples_per_step=workload.samples_per_step,
            flops_forward_per_sample=flops,
            flops_source=flops_source,
            flops_factor=TRAIN_FLOPS_FACTOR if spec.mode == "train" else 1,
            fp32_uses_tf32=info.uses_tf32(spec),
            epoch_samples=info.epoch_samples,
        )
        scenario = scenario_for(spec)
        record.scenario = scenario.facts()
        save()
        if telemetry_interval_s:
            telemetry = Telemetry.open(
                spec.device, record.environment.framework, all_gpus, telemetry_interval_s
            )
        active = workload

        def on_mark(phase: str, unix_time: float) -> None:
            # ranks start their windows together; each reads its energy counter at its own
            # edges (after the barrier at the start, before it at the end)
            if phase == "measure_start":
                active.barrier()
            if telemetry is not None:
                telemetry.mark(phase, unix_time)
            if phase == "measure_end":
                active.barrier()

        with telemetry or contextlib.nullcontext():
            artifacts = out_dir / f"{record.run_id}.loadgen" if out_dir is not None else None
            context = RunContext(
                workload, progress=progress, on_mark=on_mark, clock=clock, artifacts=artifacts
            )
            measurement = scenario.run(context)
        record.scenario = scenario.facts()
        # one-off costs of set-up work a to-accuracy run ran in its clock (compile_s)
        record.execution.one_off_s.update(workload.one_off_s)
        fill_measurement(record, measurement)
        scenario.fill_record(record)
        fill_mfu(record)
        fill_data(record, workload, measurement)
        workload.after_window()
        record.execution.details = workload.execution_details()
        if profile_steps > 0:
            record.execution.profile = workload.profile(profile_steps)
        # after the run: some frameworks only know parameter shapes after a forward pass
        record.workload.details = workload.details()
        if save_weights and out_dir is not None and (ranked is None or ranked.rank == 0):
            record.execution.details["weights"] = write_weights(workload, out_dir, record.run_id)
        missed = scenario.missed_goal()
        record.outcome = Outcome(status="target_missed" if missed else "ok", message=missed)
    except Exception as exc:
        oom = workload is not None and workload.is_oom(exc)
        record.outcome = Outcome(
            status="oom" if oom else "error",
            message=f"{type(exc).__name__}: {exc}".splitlines()[0][:500],
            traceback=traceback.format_exc(limit=20),
        )
    finally:
        if workload is not None:
            with contextlib.suppress(Exception):  # teardown must not mask the run's outcome
                workload.teardown()
    if telemetry is not None:
        samples = record.timing.measured_samples if record.timing is not None else 0
        record.telemetry = telemetry.summary(samples)
        rows = telemetry.rows()
        if rows and out_dir is not None:
            record.telemetry.timeseries_csv = save_timeseries(rows, out_dir, record)
    elif not telemetry_interval_s:
        record.telemetry = TelemetrySummary(available=False, reason="telemetry turned off")
    record.validity.flags = validity_flags(record)
    save()
    return record


def save_timeseries(rows: list[dict[str, Any]], out_dir: Path, record: RunRecord) -> str | None:
    """Write the telemetry series beside the record; its file name, or None (and the reason
    among the sampler's errors) when the disk refused it: the run's figures do not depend on
    it, and no partial file is left."""
    csv_path = out_dir / f"{record.run_id}.telemetry.csv"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_csv(rows, csv_path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            csv_path.unlink(missing_ok=True)
        record.telemetry.sampler_errors.append(f"time series not written: {describe(exc)}")
        return None
    return csv_path.name


def write_weights(workload: Workload, out_dir: Path, run_id: str) -> str:
    """Save ``workload``'s weights into ``out_dir/<run_id>.weights/``; returns that folder's
    name (relative to ``out_dir``, like the record's other files)."""
    directory = out_dir / weights_dir_name(run_id)
    directory.mkdir(parents=True, exist_ok=True)
    try:
        if not workload.save_weights(directory):
            raise RuntimeError(f"{type(workload).__name__} wrote no weights")
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    return directory.name


def fill_measurement(record: RunRecord, m: Measurement) -> None:
    """Put timings, throughput and latency statistics of ``m`` into ``record``."""
    work = record.workload
    per_step = work.samples_per_step if work is not None else record.spec.batch
    samples = m.samples if m.samples is not None else per_step * m.iterations
    tput = throughput(samples, m.iterations, m.window_s)
    flops = work.flops_forward_per_sample if work is not None else None
    if work is not None and flops is not None:
        tput.tflops_per_s = flops * work.flops_factor * tput.samples_per_s / 1e12
    record.timing = Timing(
        warmup_iters=record.spec.warmup,
        warmup_s=m.warmup_s,
        measured_iters=m.iterations,
        measured_samples=samples,
        window_s=m.window_s,
        marks_unix_s=dict(m.marks),
    )
    record.throughput = tput
    record.latency = latency_summary(m.latencies_s) if m.latencies_s else None
    record.latencies_ms = [x * 1000.0 for x in m.latencies_s]
    execution = record.execution
    if m.first_step_s is not None:
        execution.one_off_s["first_step_s"] = m.first_step_s
    execution.step_timer = m.step_timer


def fill_data(record: RunRecord, workload: Workload, m: Measurement) -> None:
    """With a dataset: the loader's facts and the share of the window the steps waited."""
    spec = record.spec
    if spec.data is None:
        return
    facts = dict(workload.data_facts())
    waits = workload.data_wait_s[-m.iterations :] if m.iterations else []
    wait = sum(waits) if len(waits) == m.iterations else None
    record.data = DataFacts(
        source=spec.data,
        format=facts.pop("format", None),
        samples=facts.pop("samples", None),
        # the workload's own count where it reads without the loader (--loader-workers unused)
        loader_workers=facts.pop("loader_workers", spec.loader_workers),
        wait_s=wait,
        wait_share=wait / m.window_s if wait is not None and m.window_s > 0 else None,
        details=facts,
    )


def fill_mfu(record: RunRecord) -> None:
    """Model-FLOPs utilization against the GPU's dense peak for the run's precision."""
    tput = record.throughput
    if tput is None:
        return
    if not record.spec.device.startswith("cuda"):
        tput.mfu = Mfu(mfu=None, peak_tflops=None, basis="CPU run: no peak table")
        return
    tf32 = record.workload.fp32_uses_tf32 if record.workload is not None else False
    tput.mfu = model_flops_utilization(
        tput.tflops_per_s, record.device_name, record.spec.precision, tf32
    )


USAGE = (
    "usage: python -m bench.run.worker run SPEC.json OPTIONS.json RESULT.json\n"
    "       python -m bench.run.worker info BACKEND DEVICE"
)


def main(argv: list[str] | None = None) -> int:
    """``run``: run the spec with the run options (both as the parent wrote them) and write
    its record; ``info``: print a backend's framework facts as JSON."""
    match sys.argv[1:] if argv is None else argv:
        case ["info", backend, device]:
            json.dump(registry.framework_info(backend, device), sys.stdout)
        case ["run", spec_file, options_file, result_file]:
            spec = RunSpec.from_dict(json.loads(Path(spec_file).read_text()))
            options = RunOptions.from_dict(json.loads(Path(options_file).read_text()))
            execute(
                spec,
                progress=options.progress,
                telemetry_interval_s=options.telemetry_interval_s,
                instance=options.instance,
                out_dir=options.out_dir,
                checkpoint=Path(result_file),
                profile_steps=options.profile_steps,
                save_weights=options.save_weights,
            )
        case _:
            print(USAGE, file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
