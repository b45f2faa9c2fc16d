"""Lazy registry of workloads: their implementations per backend, the facts each workload
declares, the Python environment each backend needs, and where to ask a backend for its
framework facts.

Entries are import strings. Implementations are resolved only inside the worker process
that runs them, so a missing or conflicting framework never breaks the harness or another
backend; workload facts come from framework-free modules. This module's loader is the only
way ``bench`` reaches ``models``. It imports nothing above the spec and the workload
interface, so the run labels (and the store's record names) build on it; scenarios load
from its table in :func:`bench.run.scenarios.scenario_for`.
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass
from typing import Any

from bench.run.builds import ORT_GPU_ARCHS
from bench.run.workload import Workload, WorkloadInfo
from bench.schema.spec import PRECISIONS, RunSpec, SpecError

#: Python environments, by name, as directories under the project root. ``main`` is the one
#: the ``bench`` command runs in; others hold backends whose dependencies conflict with it.
ENVIRONMENTS = {"main": ".venv", "mxnet": ".venv-mxnet", "serve": ".venv-serve"}
#: The environment of ``bench serve``'s server and of the endpoint client (PyTriton and
#: tritonclient need numpy < 2).
SERVE_ENV = "serve"
#: The backends whose paths the serve environment holds: ``bench serve`` serves a workload
#: that declares its served form (``WorkloadInfo.served``) on these.
SERVED_BACKENDS = ("torch", "onnxruntime")
#: A run against an endpoint: its client workload and the checks before it starts (the
#: served path sits above the runner, which reaches it only through these names).
ENDPOINT_WORKLOAD = "bench.serve.endpoint:EndpointWorkload"
ENDPOINT_PREFLIGHT = "bench.serve.endpoint:preflight"

#: Each workload's declared facts, from modules that import no framework.
WORKLOAD_INFO: dict[str, str] = {
    "null": "models.null:INFO",
    "ssd": "models.ssd.common:INFO",
    "bert": "models.bert.config:INFO",
    "bert-qa": "models.bert_qa.config:INFO",
}


@dataclass(frozen=True)
class Entry:
    target: str
    env: str = "main"
    modes: frozenset[str] = frozenset({"train", "infer"})
    precisions: frozenset[str] = frozenset(PRECISIONS)
    #: Newest GPU architecture the backend's build has kernels for; newer GPUs are refused.
    max_compute_capability: tuple[int, int] | None = None
    #: Why, shown when a GPU is refused.
    gpu_limit_reason: str = ""
    #: Distribution that must be installed for GPU runs (a GPU build of the framework).
    gpu_distribution: str | None = None
    #: CUDA architectures of that build's kernels (:mod:`bench.run.builds`), where the
    #: framework cannot say them itself; a GPU they do not run on is refused. (PyTorch's
    #: worker checks its installed build's own list.)
    gpu_archs: tuple[str, ...] | None = None
    #: How the backend uses several devices (``spec.gpus``): ``torchrun`` (one process per
    #: rank, started by torch.distributed.run), ``contexts`` (one process, one context per
    #: device), or None where it cannot.
    multi_device: str | None = None
    #: Why fp16 training cannot be captured in a CUDA graph on this backend: the host read
    #: its loss scaling makes every step. None where the scaling stays on the device (the
    #: PyTorch path: GradScaler with a fused optimizer takes the inf check and the skipped
    #: update into the optimizer's kernel, and updates the scale on the device).
    fp16_train_host_read: str | None = None
    #: How the backend builds its own graph, where it does: ``--compile`` (torch.compile)
    #: does not apply to it. None: the backend runs ``--compile``.
    own_graph: str | None = None
    #: Whether the implementation reads a dataset (``--data``) in the timed step or an
    #: evaluation; False: seeded synthetic batches only.
    reads_data: bool = True
    #: Whether a training run can save its weights for ``--pretrained`` (``--save-weights``).
    saves_weights: bool = True

    @property
    def compiles(self) -> bool:
        """Whether ``--compile`` applies (the backend builds no graph of its own)."""
        return self.own_graph is None


#: MXNet 1.9.1's newest CUDA build, mxnet-cu117, was compiled for GPUs up to Ampere (8.6):
#: V100 (7.0), T4 (7.5), A100 (8.0), A10G (8.6). It has no kernels for Ada (L4, L40S: 8.9)
#: or Hopper (H100, H200: 9.0).
_MXNET: dict[str, Any] = {
    "env": "mxnet",
    "multi_device": "contexts",
    "precisions": frozenset({"fp32", "fp16"}),
    "max_compute_capability": (8, 6),
    "gpu_limit_reason": "mxnet-cu117, the newest CUDA build of MXNet 1.9.1, has kernels up to "
    "compute capability 8.6",
    "fp16_train_host_read": "MXNet AMP's dynamic loss scaler reads its overflow check on the "
    "host (asnumpy) every step",
    "own_graph": "MXNet hybridizes with static allocation",
}


#: ONNX Runtime: inference only, on staged synthetic batches; fp16 on GPUs (the core refuses
#: fp16 on the CPU).
_ORT: dict[str, Any] = {
    "modes": frozenset({"infer"}),
    "own_graph": "ONNX Runtime optimizes the graph",
    "reads_data": False,
    "precisions": frozenset({"fp32", "fp16"}),
    "gpu_distribution": "onnxruntime-gpu",
    "gpu_archs": ORT_GPU_ARCHS,
}

REGISTRY: dict[tuple[str, str], Entry] = {
    ("null", "torch"): Entry("models.null:NullWorkload", saves_weights=False),
    ("ssd", "torch"): Entry("models.ssd.torch:SsdTorch", multi_device="torchrun"),
    ("bert", "torch"): Entry("models.bert.torch:BertTorch", multi_device="torchrun"),
    ("ssd", "onnxruntime"): Entry("models.ssd.onnx:SsdOnnx", **_ORT),
    ("bert", "onnxruntime"): Entry("models.bert.onnx:BertOnnx", **_ORT),
    ("ssd", "mxnet"): Entry("models.ssd.gluon:SsdGluon", **_MXNET),
    ("bert", "mxnet"): Entry("models.bert.gluon:BertGluon", **_MXNET),
    ("bert-qa", "torch"): Entry("models.bert_qa.torch:BertQaTorch", saves_weights=False),
    ("bert-qa", "onnxruntime"): Entry("models.bert_qa.onnx:BertQaOnnx", **_ORT),
    ("bert-qa", "mxnet"): Entry("models.bert_qa.gluon:BertQaGluon", **_MXNET, saves_weights=False),
}

#: How work is issued, per spec scenario: the fixed loop, LoadGen's scenarios (which need
#: its binding, so they load only when asked), and the accuracy scenarios.
SCENARIOS: dict[str, str] = {
    "loop": "bench.run.scenarios:FixedLoop",
    "single-stream": "bench.run.loadgen:SingleStream",
    "multi-stream": "bench.run.loadgen:MultiStream",
    "server": "bench.run.loadgen:Server",
    "offline": "bench.run.loadgen:Offline",
    "evaluate": "bench.run.accuracy:Evaluate",
    "to-accuracy": "bench.run.accuracy:ToAccuracy",
}

#: Per backend, where to ask for framework versions and device facts.
FRAMEWORK_INFO = {
    "torch": "models.torch_common:torch_info",
    "mxnet": "models.mxnet_common:mxnet_info",
    "onnxruntime": "models.onnx_common:onnxruntime_info",
}


def workload_names() -> tuple[str, ...]:
    """The workloads the registry implements, in the order they were added, with ``null``
    (no model: the harness's own overhead) last."""
    names = dict.fromkeys(workload for workload, _ in REGISTRY)
    return tuple(sorted(names, key=lambda workload: workload == "null"))


def backend_names() -> tuple[str, ...]:
    """The backends the registry implements, in :data:`FRAMEWORK_INFO`'s order (torch, the
    path that runs everywhere, first)."""
    names = {backend for _, backend in REGISTRY}
    return tuple(b for b in FRAMEWORK_INFO if b in names) + tuple(sorted(names - {*FRAMEWORK_INFO}))


def served_workload_names() -> tuple[str, ...]:
    """The workloads that declare a served form, in :func:`workload_names`' order."""
    return tuple(w for w in workload_names() if workload_info(w).served is not None)


def check_names(workload: str, backend: str) -> None:
    """Refuse a workload or a backend the registry does not know, naming the choices."""
    if all(w != workload for w, _ in REGISTRY):
        choices = ", ".join(workload_names())
        raise SpecError(f"unknown workload {workload!r}: choose from {choices}")
    if all(b != backend for _, b in REGISTRY):
        raise SpecError(f"unknown backend {backend!r}: choose from {', '.join(backend_names())}")


def lookup(workload: str, backend: str, mode: str | None = None) -> Entry:
    """The implementation of ``workload`` on ``backend`` (refusing unknown names, a missing
    pair, and a mode it does not run)."""
    check_names(workload, backend)
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


def workload_class(entry: Entry) -> type[Workload]:
    cls = load(entry.target)
    if not (isinstance(cls, type) and issubclass(cls, Workload)):
        raise TypeError(f"{entry.target} is not a Workload")
    return cls


def framework_info(backend: str, device: str) -> dict[str, Any]:
    """Versions and device facts only the backend's framework knows (CUDA runtime, cuDNN)."""
    target = FRAMEWORK_INFO.get(backend)
    if target is None:
        return {}
    info = load(target)(device)
    return dict(info)


def load(target: str) -> Any:
    """Import ``package.module:Attribute`` and return the attribute."""
    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def workload_info(workload: str) -> WorkloadInfo:
    """The facts workload ``workload`` declares (no framework is imported)."""
    target = WORKLOAD_INFO.get(workload)
    if target is None:
        raise SpecError(f"unknown workload {workload!r}")
    return _load_info(target)


def served_form(workload: str) -> Any:
    """The ``models.served.ServedForm`` workload ``workload`` declares."""
    target = workload_info(workload).served
    if target is None:
        served = ", ".join(served_workload_names())
        raise SpecError(f"workload {workload!r} is not served (served: {served})")
    return load(target)


@functools.cache
def _load_info(target: str) -> WorkloadInfo:
    info = load(target)
    if not isinstance(info, WorkloadInfo):
        raise TypeError(f"{target} is not a WorkloadInfo")
    return info


def run_label(spec: RunSpec) -> str:
    """A short name for file names and progress lines."""
    return spec.label_for(workload_info(spec.workload).shape_text(spec, "tag"))
