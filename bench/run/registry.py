"""Lazy registry of workload implementations and the Python environment each needs.

Entries are import strings, resolved only inside the worker process that runs them, so a
missing or conflicting framework never breaks the harness or another backend.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from bench.run.spec import SpecError

#: Python environments, by name, as directories under the project root. ``main`` is the one
#: the ``bench`` command runs in; others hold backends whose dependencies conflict with it.
ENVIRONMENTS = {"main": ".venv", "mxnet": ".venv-mxnet"}

ALL_PRECISIONS = frozenset({"fp32", "fp16", "bf16"})


@dataclass(frozen=True)
class Entry:
    target: str
    env: str = "main"
    modes: frozenset[str] = frozenset({"train", "infer"})
    precisions: frozenset[str] = ALL_PRECISIONS
    #: Newest GPU architecture the backend's build has kernels for; newer GPUs are refused.
    max_compute_capability: tuple[int, int] | None = None
    #: Why, shown when a GPU is refused.
    gpu_limit_reason: str = ""
    #: Distribution that must be installed for GPU runs (a GPU build of the framework).
    gpu_distribution: str | None = None


#: MXNet 1.9.1's newest CUDA build, mxnet-cu117, was compiled for GPUs up to Ampere (8.6):
#: V100 (7.0), T4 (7.5), A100 (8.0), A10G (8.6). It has no kernels for Ada (L4, L40S: 8.9)
#: or Hopper (H100, H200: 9.0).
_MXNET = {
    "env": "mxnet",
    "precisions": frozenset({"fp32", "fp16"}),
    "max_compute_capability": (8, 6),
    "gpu_limit_reason": "mxnet-cu117, the newest CUDA build of MXNet 1.9.1, has kernels up to "
    "compute capability 8.6",
}


#: ONNX Runtime: inference only; fp16 on GPUs (the core refuses fp16 on the CPU).
_ORT = {
    "modes": frozenset({"infer"}),
    "precisions": frozenset({"fp32", "fp16"}),
    "gpu_distribution": "onnxruntime-gpu",
}

REGISTRY: dict[tuple[str, str], Entry] = {
    ("null", "torch"): Entry("models.null:NullWorkload"),
    ("ssd", "torch"): Entry("models.ssd.torch:SsdTorch"),
    ("bert", "torch"): Entry("models.bert.torch:BertTorch"),
    ("ssd", "onnxruntime"): Entry("models.ssd.onnx:SsdOnnx", **_ORT),
    ("bert", "onnxruntime"): Entry("models.bert.onnx:BertOnnx", **_ORT),
    ("ssd", "mxnet"): Entry("models.ssd.gluon:SsdGluon", **_MXNET),
    ("bert", "mxnet"): Entry("models.bert.gluon:BertGluon", **_MXNET),
}

#: Per backend, where to ask for framework versions (``bench env``).
FRAMEWORK_INFO = {
    "torch": "models.torch_common:torch_info",
    "mxnet": "models.mxnet_common:mxnet_info",
    "onnxruntime": "models.onnx_common:onnxruntime_info",
}


def lookup(workload: str, backend: str, mode: str | None = None) -> Entry:
    entry = REGISTRY.get((workload, backend))
    if entry is None:
        have = sorted(b for (w, b) in REGISTRY if w == workload)
        raise SpecError(
            f"no {backend} implementation of workload {workload!r}"
            + (f" (available: {', '.join(have)})" if have else "")
        )
    if mode is not None and mode not in entry.modes:
        raise SpecError(f"{workload} on {backend} supports {', '.join(sorted(entry.modes))} only")
    return entry


def load(target: str) -> object:
    """Import ``package.module:Attribute`` and return the attribute."""
    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)
