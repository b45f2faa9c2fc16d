"""Named lists of runs. Sizes depend on the device kind: the same suite name means
"small and quick" or "the workshop's settings" on a CPU and on a GPU alike."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.run import registry
from bench.run.registry import run_label
from bench.run.runner import prepare
from bench.schema.gpu import GpuInfo
from bench.schema.spec import RunSpec, SpecError


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    build: Callable[[bool], list[dict[str, Any]]]
    #: SLA searches to run after the runs: spec fields of the server scenario plus
    #: ``start_qps``, per workload (every inference backend).
    sla: Callable[[bool], list[dict[str, Any]]] = lambda gpu: []


def _quick(gpu: bool) -> list[dict[str, Any]]:
    """Every workload and mode once, full-size models, small batches and few iterations."""
    if gpu:
        warm, iters = {"warmup": 10}, {"iters": 30}
        ssd_b, bert_b = 8, 32
    else:
        warm, iters = {"warmup": 1}, {"iters": 3}
        ssd_b, bert_b = 1, 4
    return [
        {"workload": "null", "mode": "infer", "batch": 1, "warmup": 10, "iters": 1000},
        {"workload": "ssd", "mode": "infer", "batch": ssd_b, **warm, **iters},
        {"workload": "ssd", "mode": "train", "batch": ssd_b, **warm, **iters},
        {"workload": "bert", "mode": "infer", "batch": bert_b * 2, **warm, **iters},
        {"workload": "bert", "mode": "train", "batch": bert_b, **warm, **iters},
    ]


#: Measured seconds per workshop run on a GPU: long enough for clocks and power to settle
#: and for the energy counter and NVML's 1 s power average to be trusted (validity.py).
GPU_WINDOW_S = 20.0


#: BERT question answering (the optional NLP module) at SQuAD's sequence length 384: batch 16
#: (6,144 tokens a batch) fits the 16 GB of a V100 or T4 when training in fp32 without fused
#: attention (about 0.6 GB of activations a sequence plus 1.8 GB of weights and Adam state;
#: Google's BERT README fits 12 on a 12 GB GPU), and inference needs less.
BERT_QA_ROW = {"workload": "bert-qa", "batch": 16, "seq_len": 384}


def _workshop(gpu: bool) -> list[dict[str, Any]]:
    """The two labs: SSD batch 16 at 512x512 and BERT batch 32 at seq 128, train and infer;
    then BERT question answering batch 16 at seq 384."""
    window: dict[str, Any]
    if gpu:
        window = {"warmup": 20, "iters": None, "duration_s": GPU_WINDOW_S}
    else:
        window = {"warmup": 1, "iters": 3}
    runs = []
    for workload, batch in (("ssd", 16), ("bert", 32)):
        for mode in ("train", "infer"):
            runs.append({"workload": workload, "mode": mode, "batch": batch, **window})
    for mode in ("train", "infer"):
        runs.append({**BERT_QA_ROW, "mode": mode, **window})
    return runs


def _fast(gpu: bool) -> list[dict[str, Any]]:
    """The workshop's rows on PyTorch in the fastest mode this harness has: compiled, the whole
    step captured in a CUDA graph (on a GPU), bf16 where the GPU has it, throughput timed
    pipelined; plus BERT batch-1 inference timed synchronously for its latency."""
    fast: dict[str, Any] = {
        "backend": "torch",
        "precision": "auto",
        "compile": "default",
        "cuda_graphs": gpu,
        "timing": "pipelined",
    }
    runs = [{**run, **fast} for run in _workshop(gpu)]
    bert_infer = next(r for r in runs if r["workload"] == "bert" and r["mode"] == "infer")
    latency = {**bert_infer, "batch": 1, "timing": "synchronized"}
    if gpu:
        latency.update(warmup=100, iters=None, duration_s=GPU_WINDOW_S / 2)
    return [*runs, latency]


#: A suite row with this key runs once per rank count of the machine's ladder.
LADDER = "rank_ladder"


def _scaling(gpu: bool) -> list[dict[str, Any]]:
    """Data-parallel training on 1, 2, 4, ... and all GPUs (1 and 2 CPU ranks on the CPU),
    batch per GPU as in the workshop, for scaling efficiency and the whole-instance price."""
    if gpu:
        window: dict[str, Any] = {"warmup": 20, "iters": None, "duration_s": GPU_WINDOW_S}
        sizes: list[dict[str, Any]] = [
            {"workload": "ssd", "batch": 16},
            {"workload": "bert", "batch": 32},
        ]
    else:
        window = {"warmup": 2, "iters": 5}
        sizes = [
            {"workload": "ssd", "batch": 2, "image_size": 256},
            {"workload": "bert", "batch": 8, "seq_len": 64},
        ]
    return [{**size, "mode": "train", LADDER: True, **window} for size in sizes]


def rank_ladder(gpu_count: int) -> list[int]:
    """1, 2, 4, ... up to and including ``gpu_count``."""
    counts, n = [], 1
    while n < gpu_count:
        counts.append(n)
        n *= 2
    return [*counts, max(gpu_count, 1)]


def _serving(gpu: bool) -> list[dict[str, Any]]:
    """Per workload: single-stream latency (one sample per query) and offline throughput."""
    window = {"warmup": 10, "iters": None, "duration_s": 10.0 if gpu else 5.0}
    runs = []
    for workload, batch, single_ms in (("ssd", 8, 15.0), ("bert", 32, 5.0)):
        if not gpu:
            batch, single_ms = (1, 400.0) if workload == "ssd" else (4, 150.0)
        runs += [
            {
                "workload": workload,
                "mode": "infer",
                "batch": 1,
                "scenario": "single-stream",
                "latency_bound_ms": single_ms,
                **window,
            },
            {
                "workload": workload,
                "mode": "infer",
                "batch": batch,
                "scenario": "offline",
                **window,
            },
        ]
    return runs


def _serving_sla(gpu: bool) -> list[dict[str, Any]]:
    """The highest server load under a p99 bound: 50 ms (SSD) and 15 ms (BERT) on a GPU, as
    interactive services ask; loose enough to mean something on a 2-core CPU otherwise."""
    window = {"warmup": 10, "iters": None, "duration_s": 30.0 if gpu else 10.0}
    if gpu:
        return [
            {"workload": "ssd", "batch": 8, "latency_bound_ms": 50.0, "start_qps": 100.0, **window},
            {
                "workload": "bert",
                "batch": 32,
                "latency_bound_ms": 15.0,
                "start_qps": 500.0,
                **window,
            },
        ]
    return [
        {
            "workload": "bert",
            "batch": 4,
            "seq_len": 64,
            "latency_bound_ms": 1000.0,
            "start_qps": 4.0,
            **window,
        },
    ]


SUITES = {
    s.name: s
    for s in (
        Suite(
            "quick", "each workload and mode once, small batches (the `make bench` default)", _quick
        ),
        Suite(
            "workshop",
            "the labs' settings: SSD b16 @512, BERT b32 @128, BERT QA b16 @384, train and infer",
            _workshop,
        ),
        Suite(
            "fast",
            "the workshop's rows on PyTorch compiled, graph-captured (GPU), bf16 where the GPU "
            "has it, throughput pipelined; and BERT batch-1 latency (compare with workshop)",
            _fast,
        ),
        Suite(
            "scaling",
            "data-parallel training on 1, 2, 4, ... and all GPUs (1 and 2 CPU ranks): scaling "
            "efficiency and the whole instance's price",
            _scaling,
        ),
        Suite(
            "serving",
            "LoadGen single-stream and offline per workload, then the highest server load "
            "under a p99 bound (SLA search)",
            _serving,
            _serving_sla,
        ),
    )
}


def sla_specs(
    name: str, *, gpu: bool, backends: tuple[str, ...], device: str
) -> list[tuple[RunSpec, float]]:
    """The server specs (at their starting load) and starting QPS of a suite's SLA searches,
    one per workload and inference backend."""
    suite = SUITES[name]
    out = []
    for item in suite.sla(gpu):
        fields = {k: v for k, v in item.items() if k != "start_qps"}
        for (workload, backend), entry in registry.REGISTRY.items():
            if workload != fields["workload"] or backend not in backends:
                continue
            if "infer" not in entry.modes:
                continue
            spec = RunSpec(
                **fields,
                backend=backend,
                device=device,
                scenario="server",
                target_qps=item["start_qps"],
            )
            out.append((spec, float(item["start_qps"])))
    return out


def suite_specs(
    name: str,
    *,
    gpu: bool,
    backends: tuple[str, ...] | None = None,
    ort_provider: str | None = None,
    gpu_count: int = 1,
    **overrides: Any,
) -> list[RunSpec]:
    """The specs of suite ``name``, one per available backend of each workload.

    ``overrides`` (precision, device, iters, ...) apply to every run except the null
    workload's iteration settings, which measure overhead and stay as they are. Rows of a
    rank ladder run on 1, 2, 4, ... ``gpu_count`` GPUs (1 and 2 ranks on the CPU), on the
    backends that use several devices.
    """
    suite = SUITES.get(name)
    if suite is None:
        raise SpecError(f"unknown suite {name!r}: choose from {', '.join(SUITES)}")
    specs = []
    for run in suite.build(gpu):
        for (workload, backend), entry in registry.REGISTRY.items():
            if workload != run["workload"] or (backends and backend not in backends):
                continue
            if run.get("backend", backend) != backend or run["mode"] not in entry.modes:
                continue
            if overrides.get("compile", "off") != "off" and not entry.compiles:
                continue  # a suite given --compile runs the backends that compile
            fields = {**run, "backend": backend, **overrides}
            if backend == "onnxruntime" and ort_provider:
                fields["ort_provider"] = ort_provider
            if fields.pop(LADDER, False):
                if entry.multi_device is None:
                    continue
                counts = rank_ladder(gpu_count) if gpu else [1, 2]
                specs += [RunSpec(**{**_window(fields, overrides), "gpus": n}) for n in counts]
                continue
            if registry.workload_info(workload).harness_overhead:
                fields.update({k: run[k] for k in ("warmup", "iters", "batch")})
                fields.update(precision="fp32", duration_s=None, compile="off", cuda_graphs=False)
            else:
                fields = _window(fields, overrides)
            specs.append(RunSpec(**fields))
    return specs


def _window(fields: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A duration given replaces the suite's iterations, and iterations its duration."""
    if overrides.get("duration_s") is not None:
        return {**fields, "iters": None}
    if overrides.get("iters") is not None:
        return {**fields, "duration_s": None}
    return fields


def plan(
    name: str,
    *,
    device: str,
    gpus: list[GpuInfo],
    backends: tuple[str, ...],
    ort_provider: str | None = None,
    **overrides: Any,
) -> tuple[list[RunSpec], list[str]]:
    """The prepared specs of suite ``name`` on ``device``, and a line for each run skipped
    because its backend cannot do it here (a precision, a GPU too new for a build)."""
    specs, skipped = [], []
    for spec in suite_specs(
        name,
        gpu=device.startswith("cuda"),
        backends=backends,
        ort_provider=ort_provider,
        gpu_count=len(gpus),
        device=device,
        **overrides,
    ):
        try:
            specs.append(prepare(spec, gpus))
        except SpecError as exc:
            skipped.append(f"skipped {run_label(spec)}: {exc}")
    if not specs:
        raise SpecError(skipped[0] if skipped else f"suite {name} has no runnable runs")
    return specs, skipped
