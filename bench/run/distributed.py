"""Runs that use several devices of one machine: how their ranks are started and how the
ranks' records become one.

Data-parallel PyTorch runs start one worker per rank through ``torch.distributed.run``
(torchrun): it gives each its rank in the environment, and when one rank fails it stops the
others, so a dead rank ends the run instead of leaving its peers waiting in a collective.
Each rank writes its own record; :func:`merge` makes the run's record from them: global
throughput is every rank's samples over the common window (the ranks start together after
a barrier; the window ends when the last rank finishes), and each rank's own figures are
kept beside it. No framework is imported here.
"""

from __future__ import annotations

import copy
import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.run.stats import latency_summary, throughput
from bench.run.validity import validity_flags
from bench.schema.record import (
    Flag,
    Outcome,
    RankFacts,
    RunRecord,
    Timing,
)
from bench.schema.spec import RunSpec
from bench.schema.telemetry import Mfu, TelemetrySummary
from bench.telemetry.peaks import model_flops_utilization

#: How often torchrun's agent checks its ranks: a failed rank is noticed within this.
MONITOR_INTERVAL_S = 0.5


@dataclass(frozen=True)
class RankEnv:
    """Where this process sits in a torchrun launch (from the variables torchrun sets)."""

    rank: int
    local_rank: int
    world_size: int


def rank_env(environ: Mapping[str, str]) -> RankEnv | None:
    """This process's rank, or None when it was not started by torchrun."""
    if "WORLD_SIZE" not in environ or "RANK" not in environ:
        return None
    return RankEnv(
        rank=int(environ["RANK"]),
        local_rank=int(environ.get("LOCAL_RANK", environ["RANK"])),
        world_size=int(environ["WORLD_SIZE"]),
    )


def rank_device(spec: RunSpec, local_rank: int) -> str:
    """The device of rank ``local_rank``: ``cuda:<local rank>`` on GPUs, else ``cpu``."""
    return f"cuda:{local_rank}" if spec.device.startswith("cuda") else "cpu"


def torchrun_command(python: Path | str, ranks: int, worker_args: Sequence[str]) -> list[str]:
    """The command that starts ``ranks`` workers on this machine: a standalone rendezvous on
    a free local port, no restarts (a failed rank fails the run)."""
    return [
        str(python),
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nnodes",
        "1",
        "--nproc-per-node",
        str(ranks),
        "--max-restarts",
        "0",
        "--monitor-interval",
        str(MONITOR_INTERVAL_S),
        "--module",
        "bench.run.worker",
        *worker_args,
    ]


def rank_result_path(result_file: Path, rank: int) -> Path:
    """Where rank ``rank`` writes its record, beside the run's hand-off file."""
    return result_file.with_name(f"{result_file.stem}.rank{rank}{result_file.suffix}")


_ROOT_CAUSE_RE = re.compile(
    r"Root Cause.*?rank\s*:\s*(\d+).*?exitcode\s*:\s*(-?\d+)(?:.*?traceback\s*:\s*([^\n]+))?",
    re.S,
)


def torchrun_failure(output: str) -> str | None:
    """torchrun's account of the first rank that failed (its "Root Cause" block), as one
    line; None when the output holds none."""
    match = _ROOT_CAUSE_RE.search(output)
    if match is None:
        return None
    rank, code, why = match.group(1), match.group(2), (match.group(3) or "").strip()
    line = f"torchrun: rank {rank} exited with code {code}"
    return f"{line} ({why})" if why and not why.startswith("To enable traceback") else line


def scaling_efficiency(samples_per_s: float, ranks: int, one_device_samples_per_s: float) -> float:
    """N-device throughput over N times the one-device throughput (1.0: perfect scaling)."""
    if ranks < 1 or one_device_samples_per_s <= 0:
        raise ValueError("scaling needs a positive one-device throughput and rank count")
    return samples_per_s / (ranks * one_device_samples_per_s)


def merge(spec: RunSpec, ranks: Sequence[RunRecord]) -> RunRecord:
    """The run's record from its ranks' records, in rank order.

    A run is ok only if every rank is; otherwise its outcome is the first rank that raised
    (a rank stopped because another failed says less than the one that failed).
    """
    if not ranks:
        raise ValueError("no rank records to merge")
    record = copy.deepcopy(ranks[0])
    record.spec = spec
    record.ranks = [rank_facts(i, r) for i, r in enumerate(ranks)]
    failed = [(i, r) for i, r in enumerate(ranks) if not r.ok]
    if failed:
        rank, worst = min(failed, key=lambda item: (item[1].outcome.traceback is None, item[0]))
        record.outcome = Outcome(
            status="oom" if any(r.outcome.status == "oom" for _, r in failed) else "error",
            message=f"rank {rank}: {worst.outcome.message}",
            traceback=worst.outcome.traceback,
        )
        record.timing = record.throughput = record.latency = None
        record.latencies_ms = []
        record.telemetry = merge_telemetry([r.telemetry for r in ranks], None, spec)
        record.validity.flags = validity_flags(record)
        return record
    timings = [r.timing for r in ranks]
    assert all(t is not None for t in timings), "an ok rank has timings"
    done = [t for t in timings if t is not None]
    samples = sum(t.measured_samples for t in done)
    window = max(t.window_s for t in done)
    record.timing = Timing(
        warmup_iters=spec.warmup,
        warmup_s=max(t.warmup_s for t in done),
        measured_iters=done[0].measured_iters,
        measured_samples=samples,
        window_s=window,
        marks_unix_s=dict(done[0].marks_unix_s),
    )
    tput = throughput(samples, done[0].measured_iters, window)
    work = record.workload
    if work is not None and work.flops_forward_per_sample is not None:
        tput.tflops_per_s = work.flops_forward_per_sample * work.flops_factor
        tput.tflops_per_s *= tput.samples_per_s / 1e12
    tput.mfu = _per_device_mfu(record, tput.tflops_per_s, len(ranks))
    record.throughput = tput
    pooled = [ms for r in ranks for ms in r.latencies_ms]
    record.latencies_ms = pooled
    record.latency = latency_summary([ms / 1000 for ms in pooled]) if pooled else None
    record.telemetry = merge_telemetry([r.telemetry for r in ranks], samples, spec)
    flags = validity_flags(record)
    seen = {(f.code, f.message) for f in flags}
    for facts in record.ranks:
        for f in facts.flags:
            flag = Flag(code=f.code, message=f"rank {facts.rank}: {f.message}")
            if (flag.code, flag.message) not in seen:
                flags.append(flag)
                seen.add((flag.code, flag.message))
    record.validity.flags = flags
    return record


def rank_facts(rank: int, record: RunRecord) -> RankFacts:
    timing = record.timing
    return RankFacts(
        rank=rank,
        device=record.spec.device,
        device_name=record.device_name,
        status=record.outcome.status,
        message=record.outcome.message,
        measured_samples=timing.measured_samples if timing is not None else None,
        window_s=timing.window_s if timing is not None else None,
        samples_per_s=record.samples_per_s,
        latency=record.latency,
        telemetry=record.telemetry,
        flags=list(record.validity.flags),
        run_id=record.run_id,
        distributed=record.execution.details.get("distributed"),
    )


def _per_device_mfu(record: RunRecord, tflops: float | None, ranks: int) -> Mfu:
    if not record.spec.device.startswith("cuda"):
        return Mfu(mfu=None, peak_tflops=None, basis="CPU run: no peak table")
    tf32 = record.workload.fp32_uses_tf32 if record.workload is not None else False
    per_device = tflops / ranks if tflops is not None else None
    mfu = model_flops_utilization(per_device, record.device_name, record.spec.precision, tf32)
    mfu.basis = f"per GPU (the run's TFLOP/s over its {ranks} GPUs); {mfu.basis}"
    return mfu


def merge_telemetry(
    parts: Sequence[TelemetrySummary], samples: int | None, spec: RunSpec
) -> TelemetrySummary:
    """The run's telemetry from each rank's: energy and power summed over the GPUs,
    utilization averaged, memory and temperature at their peaks, any throttling counted.
    CPU ranks share one host, whose figures every rank measured alike: rank 0's stand."""
    first = copy.deepcopy(parts[0])
    if not spec.device.startswith("cuda") or not all(p.available for p in parts):
        if not all(p.available for p in parts):
            missing = [i for i, p in enumerate(parts) if not p.available]
            first.available = False
            first.reason = f"rank(s) {missing} have no telemetry: {parts[missing[0]].reason}"
        return first
    merged = first
    merged.gpu = None  # one per rank, in the ranks section
    merged.util_gpu_mean_pct = _mean([p.util_gpu_mean_pct for p in parts])
    merged.util_gpu_max_pct = _max([p.util_gpu_max_pct for p in parts])
    merged.util_mem_mean_pct = _mean([p.util_mem_mean_pct for p in parts])
    merged.mem_used_peak_mib = _max([p.mem_used_peak_mib for p in parts])
    merged.power_mean_w = _sum([p.power_mean_w for p in parts])
    merged.power_sampled_mean_w = _sum([p.power_sampled_mean_w for p in parts])
    # the GPUs' peaks need not coincide: their sum was never measured (each rank keeps its own)
    merged.power_max_w = None
    merged.power_limit_w = _sum([p.power_limit_w for p in parts])
    merged.sm_clock_mean_mhz = _mean([p.sm_clock_mean_mhz for p in parts])
    merged.mem_clock_mean_mhz = _mean([p.mem_clock_mean_mhz for p in parts])
    merged.temp_max_c = _max([p.temp_max_c for p in parts])
    merged.pstates_seen = sorted({s for p in parts for s in p.pstates_seen})
    merged.throttle_reasons_seen = sorted({s for p in parts for s in p.throttle_reasons_seen})
    merged.throttled = any(p.throttled for p in parts)
    merged.energy_j = _sum([p.energy_j for p in parts])
    merged.energy_per_sample_j = (
        merged.energy_j / samples if merged.energy_j is not None and samples else None
    )
    others = [p.other_processes for p in parts]
    merged.other_processes = (
        None if any(o is None for o in others) else sorted({x for o in others for x in o or []})
    )
    merged.sampler_errors = [e for p in parts for e in p.sampler_errors]
    return merged


def _sum(values: Sequence[float | None]) -> float | None:
    return None if any(v is None for v in values) else sum(v for v in values if v is not None)


def _max(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def _mean(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.fmean(present) if present else None
