"""What every PyTorch workload shares: device, precision, synchronization, OOM detection."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from bench.run.spec import RunSpec
from bench.run.workload import Workload

AUTOCAST_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


class TorchWorkload(Workload):
    """Base for the PyTorch path: sync, autocast and OOM handling in one place."""

    def __init__(self, spec: RunSpec) -> None:
        super().__init__(spec)
        self.device = torch.device(spec.device)
        self.scaler: torch.amp.GradScaler | None = None
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
            # Convolutions see one input shape for the whole run: let cuDNN pick the fastest.
            torch.backends.cudnn.benchmark = True
        if spec.mode == "train" and spec.precision == "fp16":
            self.scaler = torch.amp.GradScaler(self.device.type)
        torch.manual_seed(spec.seed)

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        dtype = AUTOCAST_DTYPES.get(self.spec.precision)
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def to_device(self, array: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(array)
        if self.device.type == "cuda" and self.spec.include_h2d:
            tensor = tensor.pin_memory()
        return tensor.to(self.device, non_blocking=True)

    def backward_and_step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        """Backward with the fp16 grad scaler when there is one, optional clipping, update."""
        optimizer.zero_grad(set_to_none=True)
        clip = getattr(self, "grad_clip", None)
        params = [p for group in optimizer.param_groups for p in group["params"]]
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            if clip is not None:
                self.scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(params, clip)
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            loss.backward()
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(params, clip)
            optimizer.step()

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def is_oom(self, exc: BaseException) -> bool:
        if isinstance(exc, torch.OutOfMemoryError):
            return True
        return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()

    def teardown(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


def index_tensor(indices: Sequence[int], device: torch.device) -> torch.Tensor:
    """A query's sample indices as an int64 tensor on ``device`` (for ``index_select``)."""
    return torch.as_tensor(list(indices), dtype=torch.int64, device=device)


def torch_info(device: str) -> dict[str, Any]:
    info: dict[str, Any] = {
        "framework": "torch",
        "torch_version": torch.__version__,
        "cuda_build": torch.version.cuda,
        "cudnn_version": None,
        "torch_num_threads": torch.get_num_threads(),
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "tf32_cudnn": torch.backends.cudnn.allow_tf32,
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        dev = torch.device(device)
        props = torch.cuda.get_device_properties(dev)
        info.update(
            cudnn_version=torch.backends.cudnn.version(),
            device_name=props.name,
            device_capability=f"{props.major}.{props.minor}",
            device_memory_bytes=props.total_memory,
            device_multiprocessors=props.multi_processor_count,
            device_uuid=str(getattr(props, "uuid", "")) or None,
            device_pci_bus_id=_pci_bus_id(dev),
        )
    return info


def _pci_bus_id(dev: torch.device) -> str | None:
    props = torch.cuda.get_device_properties(dev)
    parts = [getattr(props, k, None) for k in ("pci_domain_id", "pci_bus_id", "pci_device_id")]
    if any(p is None for p in parts):
        return None
    domain, bus, device = parts
    return f"{domain:08X}:{bus:02X}:{device:02X}.0"
