"""The parent side: validate a spec, start its worker in the right environment, collect
and store the record. A crashed or killed worker becomes an ``error`` record, never a
crash of the caller."""

from __future__ import annotations

import collections
import contextlib
import importlib.metadata
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from bench.run import builds, capabilities, envinfo, registry
from bench.run.capabilities import check_save_weights
from bench.run.distributed import merge, rank_result_path, torchrun_command, torchrun_failure
from bench.run.options import RunOptions as RunOptions
from bench.run.processes import python_for, stop_group
from bench.run.registry import run_label
from bench.run.store import describe, load_record, new_record, weights_dir_name, write_record
from bench.schema.gpu import GpuInfo
from bench.schema.record import Outcome, ResultError, RunRecord, to_plain
from bench.schema.spec import ALL_GPUS, RunSpec, SpecError
from bench.telemetry.contention import usable_cores
from bench.telemetry.devices import (
    check_precision,
    default_gpus,
    gpu_for,
    resolve_device,
    resolve_precision,
)


class RecordNotSaved(Exception):
    """A run whose record could not be written (a full or read-only disk). It holds the
    record, so that its figures can still be shown; the run's other files are removed."""

    def __init__(self, record: RunRecord, path: Path, error: OSError) -> None:
        super().__init__(f"the record of the run could not be written to {path}: {describe(error)}")
        self.record = record
        self.path = path


def prepare(
    spec: RunSpec,
    gpus: list[GpuInfo] | None = None,
    *,
    installed: Callable[[str], bool] | None = None,
    cores: int | None = None,
) -> RunSpec:
    """Check what the spec alone cannot (the registry's names and capabilities, the device,
    the precision, a checkpoint, a dataset) and resolve the device and an ``auto`` precision.

    ``gpus`` (default: the GPUs this process sees) and ``installed`` (whether a distribution
    is installed; default: this environment's metadata) are the machine's facts, given as
    data in tests, as is ``cores`` (default: the cores this process may run on). Raises
    :class:`SpecError` before anything runs or is written.
    """
    installed = installed or distribution_installed
    entry = registry.lookup(spec.workload, spec.backend, spec.mode)
    gpus = default_gpus() if gpus is None else gpus
    device = resolve_device(spec.device, gpus)
    gpu = gpu_for(device, gpus)
    precision = resolve_precision(spec.precision, device, gpu, entry.precisions)
    resolved = spec.replace(precision=precision)
    capabilities.check(resolved, entry, registry.workload_info(spec.workload))
    check_precision(precision, device, gpu)
    limit = entry.max_compute_capability
    if gpu is not None and limit and gpu.compute_capability and gpu.compute_capability > limit:
        major, minor = gpu.compute_capability
        raise SpecError(
            f"{spec.backend} cannot run on {gpu.name} (compute capability {major}.{minor}): "
            f"{entry.gpu_limit_reason}; use --backend torch"
        )
    cap = gpu.compute_capability if gpu is not None else None
    if gpu is not None and cap is not None and entry.gpu_archs is not None:
        what = entry.gpu_distribution or spec.backend
        refusal = builds.arch_refusal(what, entry.gpu_archs, cap, gpu.name)
        if refusal is not None:
            raise SpecError(refusal)
    if gpu is not None and entry.gpu_distribution and not installed(entry.gpu_distribution):
        raise SpecError(
            f"{spec.backend} on a GPU needs {entry.gpu_distribution}, which is not installed "
            "here (`make setup` installs it where nvidia-smi finds a GPU)"
        )
    if spec.endpoint is not None:
        registry.load(registry.ENDPOINT_PREFLIGHT)(spec)  # the served path's own checks
    else:
        python_for(entry.env)
    return resolved.replace(device=device, gpus=resolve_ranks(spec, device, gpus, cores))


def resolve_ranks(
    spec: RunSpec, device: str, gpus: list[GpuInfo], cores: int | None = None
) -> int | None:
    """``gpus``: ``all`` as the GPU count; refuses more GPUs than the machine has, and more
    CPU ranks than its usable ``cores`` (default: this process's): ranks sharing a core
    measure the contention between them, not the work."""
    if spec.gpus is None:
        return None
    if spec.device.startswith("cuda:") and spec.device != "cuda:0":
        raise SpecError(
            f"--gpus places the ranks on cuda:0 onwards: give --device cuda (or auto), "
            f"not {spec.device}"
        )
    if device == "cpu":
        if spec.gpus == ALL_GPUS:
            raise SpecError("--gpus all asked for, but no NVIDIA GPU was found (nvidia-smi)")
        cores = len(usable_cores()) if cores is None else cores
        if spec.ranks > cores:
            raise SpecError(
                f"--gpus {spec.ranks} on the CPU asks for {spec.ranks} ranks, but this machine "
                f"has {cores} usable core(s): give --gpus {cores} or fewer"
            )
        return spec.ranks
    count = len(gpus) if spec.gpus == ALL_GPUS else spec.ranks
    if count > len(gpus):
        raise SpecError(f"--gpus {count} asked for, but this machine has {len(gpus)} GPU(s)")
    return count


def distribution_installed(distribution: str) -> bool:
    try:
        importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def backend_available(backend: str) -> bool:
    """Whether every environment that ``backend``'s workloads need is set up."""
    envs = {e.env for (_, b), e in registry.REGISTRY.items() if b == backend}
    try:
        for env in envs:
            python_for(env)
    except SpecError:
        return False
    return bool(envs)


def run(spec: RunSpec, options: RunOptions) -> tuple[RunRecord, Path]:
    """Run a prepared spec in a worker process; store and return its record and path.

    The worker writes the telemetry time series to ``<run_id>.telemetry.csv`` in
    ``out_dir``. A worker that dies leaves the record it had collected so far; its outcome
    then says how the worker ended.
    """
    out_dir, instance = options.out_dir, options.instance
    check_save_weights(spec, options.save_weights)
    entry = registry.lookup(spec.workload, spec.backend, spec.mode)
    python = python_for(registry.SERVE_ENV if spec.endpoint is not None else entry.env)
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        spec_file, result_file = Path(tmp, "spec.json"), Path(tmp, "result.json")
        options_file = Path(tmp, "options.json")
        spec_file.write_text(json.dumps(spec.to_dict()))
        options_file.write_text(json.dumps(options.to_dict()))
        worker_args = ["run", str(spec_file), str(options_file), str(result_file)]
        cmd = [str(python), "-m", "bench.run.worker", *worker_args]
        ranks = spec.ranks if entry.multi_device == "torchrun" and spec.gpus else 0
        if ranks:
            cmd = torchrun_command(python, ranks, worker_args)
        result_files = [rank_result_path(result_file, r) for r in range(ranks)] or [result_file]
        try:
            code, tail = _run_worker(cmd, options.timeout_s, rank_threads(ranks))
        except BaseException:
            for path in result_files:
                _remove_partial_outputs(path, out_dir)
            raise
        if ranks:
            rank_tail = torchrun_failure(tail) or tail
            parts = [collect(path, spec, code, rank_tail, instance) for path in result_files]
            record = merge(spec, parts)
        else:
            record = collect(result_file, spec, code, tail, instance)
    try:
        return record, write_record(record, out_dir)
    except OSError as exc:
        remove_run_files(record.run_id, out_dir)
        raise RecordNotSaved(record, out_dir / f"{record.run_id}.json", exc) from exc


def _remove_partial_outputs(result_file: Path, out_dir: Path) -> None:
    """After an interrupt: the telemetry series and LoadGen logs the worker may have written
    for a run that will have no record."""
    with contextlib.suppress(ResultError, OSError):
        remove_run_files(load_record(result_file).run_id, out_dir)


def remove_run_files(run_id: str, out_dir: Path) -> None:
    """The files a run writes beside its record (telemetry series, saved weights, LoadGen
    logs), for a run that has no record: none is left orphaned."""
    with contextlib.suppress(OSError):
        (out_dir / f"{run_id}.telemetry.csv").unlink(missing_ok=True)
    shutil.rmtree(out_dir / weights_dir_name(run_id), ignore_errors=True)
    shutil.rmtree(out_dir / f"{run_id}.loadgen", ignore_errors=True)


def collect(
    result_file: Path, spec: RunSpec, code: int | None, tail: str, instance: str | None = None
) -> RunRecord:
    """The worker's record. A worker that did not finish left a checkpoint (or nothing):
    its record keeps what was collected and its outcome says how the worker ended."""
    record = None
    if result_file.exists():
        try:
            record = load_record(result_file)
        except ResultError:
            record = None
    if record is None:
        record = new_record(spec, envinfo.collect(default_gpus(), instance=instance))
    if record.outcome.status == "running":
        record.outcome = Outcome(status="error", message=_crash_message(code, tail))
    return record


def rank_threads(ranks: int, environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """Each rank's share of the usable cores as its OpenMP thread count (torchrun would set 1
    and say so), unless the user set one."""
    if ranks < 1 or "OMP_NUM_THREADS" in environ:
        return {}
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"OMP_NUM_THREADS": str(max(1, (cores or 1) // ranks))}


def _run_worker(
    cmd: list[str], timeout_s: float | None, extra_env: Mapping[str, str] | None = None
) -> tuple[int | None, str]:
    """Run the worker, passing its stderr through live (progress bars) and keeping a tail.

    The worker leads its own process group, so that a timeout or an interrupt of this
    process (SIGINT, SIGTERM) stops it and everything it started: nothing is left holding
    the GPU. Its output always ends on a new line, so the next line starts clean.
    """
    env = {**os.environ, **(extra_env or {})}
    root = str(envinfo.PROJECT_ROOT)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    # cuda:N then means the N-th visible GPU in nvidia-smi's (PCI) order, for every framework
    env.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, env=env, cwd=root, start_new_session=True)
    tail: collections.deque[bytes] = collections.deque(maxlen=64)

    stderr = proc.stderr
    assert stderr is not None

    def pump() -> None:
        for chunk in iter(lambda: os.read(stderr.fileno(), 4096), b""):
            sys.stderr.buffer.write(chunk)
            sys.stderr.buffer.flush()
            tail.append(chunk)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        code: int | None = proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        stop_group(proc)
        code = None
    except BaseException:
        stop_group(proc)
        raise
    finally:
        reader.join(timeout=5)
        stderr.close()
        _end_line(b"".join(tail))
    return code, b"".join(tail).decode(errors="replace")


def _end_line(output: bytes) -> None:
    """A progress bar closes with a carriage return and no newline: in a log (not a
    terminal) the next line would run into it."""
    cleared_in_a_terminal = output.endswith(b"\r") and sys.stderr.isatty()
    if output and not output.endswith(b"\n") and not cleared_in_a_terminal:
        sys.stderr.write("\n")
        sys.stderr.flush()


def _crash_message(code: int | None, tail: str) -> str:
    if code is None:
        why = "the worker ran past its time limit and was killed"
    elif code < 0:
        name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else code
        why = f"the worker was killed by signal {name}"
        if code == -signal.SIGKILL:
            why += " (out of host memory?)"
    else:
        why = f"the worker exited with code {code} without writing a result"
    lines = [ln.strip() for ln in tail.replace("\r", "\n").splitlines() if ln.strip()]
    return why + (f": {lines[-1][:300]}" if lines else "")


def run_all(
    specs: Sequence[RunSpec], options: RunOptions, stream: TextIO = sys.stderr
) -> list[RunRecord]:
    """Run specs one after another, each in its own worker; a failed run does not stop the
    rest. Progress (``[i/N] label`` and failures) goes to ``stream``."""
    records = []
    for i, spec in enumerate(specs, 1):
        print(f"[{i}/{len(specs)}] {run_label(spec)}", file=stream, flush=True)
        record, _ = run(spec, options)
        if not record.ok:
            print(f"  {record.outcome.status}: {record.outcome.message}", file=stream)
        records.append(record)
    return records


def environment_report(gpus: list[GpuInfo]) -> dict[str, Any]:
    """The environment record plus each backend's framework facts, asked of a worker in
    that backend's environment (``bench env``)."""
    device = resolve_device("auto", gpus)
    report: dict[str, Any] = to_plain(envinfo.collect(gpus))
    frameworks: dict[str, Any] = {}
    for backend, env in sorted({(b, e.env) for (_, b), e in registry.REGISTRY.items()}):
        try:
            python = python_for(env)
        except SpecError as exc:
            frameworks[backend] = {"available": False, "reason": str(exc)}
            continue
        out = subprocess.run(
            [str(python), "-m", "bench.run.worker", "info", backend, device],
            capture_output=True,
            text=True,
            cwd=envinfo.PROJECT_ROOT,
        )
        frameworks[backend] = (
            json.loads(out.stdout)
            if out.returncode == 0
            else {"available": False, "reason": out.stderr.strip().splitlines()[-1:]}
        )
    report["frameworks"] = frameworks
    return report
