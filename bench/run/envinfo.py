"""The environment record stored with every result. No framework is imported here:
package versions come from installed metadata, GPUs from nvidia-smi, and what only a
framework knows (CUDA runtime, cuDNN) is added by the workload in the worker."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.run.ec2 import instance_facts
from bench.schema.gpu import GpuInfo
from bench.schema.record import Environment, InstanceFacts, ProjectFacts, from_plain
from bench.telemetry.sampling import load_nvml
from bench.telemetry.topology import interconnect

PROJECT_ROOT = Path(__file__).resolve().parents[2]

#: Distributions whose versions matter for a result, when installed.
TRACKED_PACKAGES = (
    "torch",
    "torchvision",
    "transformers",
    "numpy",
    "mxnet",
    "mxnet-cu117",
    "gluoncv",
    "gluonnlp",
    "onnx",
    "onnxruntime",
    "onnxruntime-gpu",
    "nvidia-ml-py",
)


def package_versions() -> dict[str, str]:
    versions = {}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def memory_total_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def git_commit(root: Path = PROJECT_ROOT) -> dict[str, Any]:
    """The project's commit and whether the work tree had local changes.

    A copy of the tree without ``.git`` (shipped to a GPU machine) may carry the commit in
    a ``COMMIT`` file at its root instead; ``dirty`` is then unknown.
    """

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(
                ["git", *args], cwd=root, capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None and (root / "COMMIT").is_file():
        return {"commit": (root / "COMMIT").read_text().strip() or None, "dirty": None}
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def nvml_versions() -> dict[str, Any]:
    """Driver, NVML and CUDA-driver versions from NVML, or why they are absent."""
    nvml, why = load_nvml()
    if nvml is None:
        return {"available": False, "reason": why}
    try:
        cuda = nvml.nvmlSystemGetCudaDriverVersion()
        return {
            "available": True,
            "driver_version": _text(nvml.nvmlSystemGetDriverVersion()),
            "nvml_version": _text(nvml.nvmlSystemGetNVMLVersion()),
            "cuda_driver_version": f"{cuda // 1000}.{cuda % 1000 // 10}",
        }
    except Exception as exc:  # noqa: BLE001
        return {"available": False, "reason": f"{type(exc).__name__}: {exc}"}
    finally:
        nvml.nvmlShutdown()


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def collect(gpus: list[GpuInfo], instance: str | None = None) -> Environment:
    """What can be known without importing a framework."""
    affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    return Environment(
        hostname=socket.gethostname(),
        os=platform.platform(),
        python=sys.version.split()[0],
        python_executable_env=Path(sys.prefix).name,
        cpu_model=cpu_model(),
        cpu_count_logical=os.cpu_count(),
        cpu_count_usable=len(affinity) if affinity is not None else None,
        memory_total_bytes=memory_total_bytes(),
        gpu_count=len(gpus),
        gpus=list(gpus),
        driver_version=gpus[0].driver_version if gpus else None,
        cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"),
        packages=package_versions(),
        project=from_plain(ProjectFacts, git_commit()),
        nvml=nvml_versions() if gpus else {"available": False, "reason": "no GPU"},
        instance=from_plain(InstanceFacts, instance_facts(override=instance)),
        interconnect=interconnect() if gpus else {"available": False, "reason": "no GPU"},
    )
