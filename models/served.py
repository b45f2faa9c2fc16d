"""What a served form is: a workload's tensors on the Open Inference Protocol, the seeded
sample library a client sends (the same samples the in-process runs stage), and the
callable a server binds, which runs the in-process workload's own inference path.

Each workload declares its form in its own module, named by ``WorkloadInfo.served``
(:func:`bench.run.registry.served_form` loads it). Importing this module imports no
framework (numpy only); :class:`TorchServed` imports torch when it binds a workload whose
path holds its samples as torch tensors.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench.run.workload import Workload
from bench.schema.spec import RunSpec

Arrays = dict[str, np.ndarray]
InferFn = Callable[[Arrays], Arrays]


@dataclass(frozen=True)
class Tensor:
    name: str
    dtype: type[np.generic]
    #: One sample's shape (the batch dimension is the server's).
    shape: tuple[int, ...]


@dataclass(frozen=True)
class Signature:
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]


class ServedForm(ABC):
    """How one workload is served."""

    @abstractmethod
    def signature(self, spec: RunSpec) -> Signature:
        """The served model's inputs and outputs for ``spec``'s shape."""

    @abstractmethod
    def sample_arrays(self, spec: RunSpec, count: int) -> Arrays:
        """The ``count`` seeded samples the in-process paths stage for ``spec``
        (``stage_samples``), as host arrays keyed by input name."""

    @abstractmethod
    def infer_fn(self, workload: Workload, service_s: float = 0.0) -> InferFn:
        """A callable over a batch of host arrays that runs ``workload``'s own
        ``infer_samples`` (set up, inference), so the served answers are the in-process
        answers. ``service_s``: a fixed time per batch, where the form has one (a sleeper
        for tests)."""


class TorchServed(ServedForm):
    """A workload whose torch and onnxruntime paths hold their samples as torch tensors:
    each batch becomes its staged library and every sample of it is queried."""

    @abstractmethod
    def stage(self, workload: Workload, inputs: Arrays) -> int:
        """Stage the batch ``inputs`` as ``workload``'s sample library; its sample count."""

    def infer_fn(self, workload: Workload, service_s: float = 0.0) -> InferFn:
        import torch

        outputs = self.signature(workload.spec).outputs

        def infer(inputs: Arrays) -> Arrays:
            count = self.stage(workload, inputs)
            out = workload.infer_samples(range(count))
            tensors = out if isinstance(out, tuple) else (out,)
            with torch.inference_mode():
                arrays = [t.detach().float().cpu().numpy() for t in tensors]
            return {
                t.name: a.astype(t.dtype, copy=False) for t, a in zip(outputs, arrays, strict=True)
            }

        return infer


def on_device(array: np.ndarray, device: str) -> Any:
    """A host array as a torch tensor on ``device``."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(array)).to(torch.device(device))
