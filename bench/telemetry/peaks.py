"""Dense peak throughput per GPU model and precision, from NVIDIA's datasheets, for MFU.

All figures are TFLOP/s without structured sparsity. Newer datasheets (L4, L40S, H100, H200)
quote some tensor-core figures only "with sparsity" and footnote that the dense figure is half;
those entries say "sparse / 2". Figures are the datasheets' boost-clock peaks: a real run that
reaches them is impossible, so MFU is a ratio to a ceiling, not a score out of 1.

No framework import here: this is the harness core.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from bench.schema.telemetry import Mfu

#: Precisions a peak can be asked for. "fp32" is the non-tensor (CUDA core) rate.
PEAK_PRECISIONS = ("fp32", "tf32", "fp16", "bf16")


@dataclass(frozen=True)
class GpuPeak:
    """One GPU model's dense peaks.

    ``match`` holds lower-case fragments of the name NVML/nvidia-smi reports; a fragment
    matches only as a whole token run (``"l4"`` does not match ``"l40s"``), and the longest
    matching fragment over the whole table wins. ``exclude`` fragments veto the entry.
    """

    model: str
    match: tuple[str, ...]
    tflops: dict[str, float | None]
    source: str
    datasheet: str = ""
    exclude: tuple[str, ...] = ()


def _cite(datasheet: str, url: str, derivation: str) -> str:
    return f"{datasheet}, {url}; {derivation}"


_V100 = "NVIDIA Tesla V100 GPU Accelerator datasheet"
_V100_URL = "https://www.nvidia.com/en-us/data-center/v100/"
_T4 = "NVIDIA T4 Tensor Core GPU datasheet"
_T4_URL = "https://www.nvidia.com/en-us/data-center/tesla-t4/"
_A10 = "NVIDIA A10 Tensor Core GPU datasheet"
_A10_URL = "https://www.nvidia.com/en-us/data-center/products/a10-gpu/"
_A100 = "NVIDIA A100 Tensor Core GPU datasheet"
_A100_URL = "https://www.nvidia.com/en-us/data-center/a100/"
_L4 = "NVIDIA L4 Tensor Core GPU datasheet"
_L4_URL = "https://www.nvidia.com/en-us/data-center/l4/"
_L40S = "NVIDIA L40S GPU datasheet"
_L40S_URL = "https://www.nvidia.com/en-us/data-center/l40s/"
_H100 = "NVIDIA H100 Tensor Core GPU datasheet"
_H100_URL = "https://www.nvidia.com/en-us/data-center/h100/"
_H200 = "NVIDIA H200 Tensor Core GPU datasheet"
_H200_URL = "https://www.nvidia.com/en-us/data-center/h200/"

_VOLTA_TURING = (
    "fp16 is the datasheet's tensor (mixed-precision FP16/FP32) figure, dense (no sparsity "
    "before Ampere); no TF32 or BF16 tensor cores before Ampere"
)
_AMPERE_DENSE = "dense figures as printed (the datasheet gives dense | sparse)"
_SPARSE_HALF = (
    "tf32/fp16/bf16 = datasheet 'with sparsity' figure / 2 (the datasheet's own footnote: "
    "dense is half); fp32 as printed"
)

PEAKS: tuple[GpuPeak, ...] = (
    GpuPeak(
        model="Tesla V100 SXM2",
        match=("v100-sxm2", "v100 sxm2"),
        tflops={"fp32": 15.7, "tf32": None, "fp16": 125.0, "bf16": None},
        source=_cite(_V100, _V100_URL, "V100 SXM2 column; " + _VOLTA_TURING),
        datasheet=_V100,
    ),
    GpuPeak(
        model="Tesla V100 PCIe",
        match=("v100-pcie", "v100 pcie"),
        tflops={"fp32": 14.0, "tf32": None, "fp16": 112.0, "bf16": None},
        source=_cite(_V100, _V100_URL, "V100 PCIe column; " + _VOLTA_TURING),
        datasheet=_V100,
    ),
    GpuPeak(
        model="Tesla T4",
        match=("t4",),
        tflops={"fp32": 8.1, "tf32": None, "fp16": 65.0, "bf16": None},
        source=_cite(_T4, _T4_URL, _VOLTA_TURING),
        datasheet=_T4,
    ),
    GpuPeak(
        model="NVIDIA A10G",
        match=("a10g",),
        tflops={"fp32": 31.2, "tf32": 62.5, "fp16": 125.0, "bf16": 125.0},
        source=_cite(
            _A10,
            _A10_URL,
            "A10G (AWS-only variant) has no public NVIDIA datasheet: these are the A10's "
            "figures, " + _AMPERE_DENSE + ". AWS-quoted A10G figures differ (higher fp32, "
            "lower tensor rates), so A10G MFU against these peaks is approximate",
        ),
        datasheet=_A10 + " (A10 figures used for A10G)",
    ),
    GpuPeak(
        model="NVIDIA A10",
        match=("a10",),
        tflops={"fp32": 31.2, "tf32": 62.5, "fp16": 125.0, "bf16": 125.0},
        source=_cite(_A10, _A10_URL, _AMPERE_DENSE),
        datasheet=_A10,
    ),
    GpuPeak(
        model="NVIDIA L4",
        match=("l4",),
        tflops={"fp32": 30.3, "tf32": 60.0, "fp16": 121.0, "bf16": 121.0},
        source=_cite(_L4, _L4_URL, _SPARSE_HALF + " (TF32 120, FP16/BF16 242 sparse)"),
        datasheet=_L4,
    ),
    GpuPeak(
        model="NVIDIA L40S",
        match=("l40s",),
        tflops={"fp32": 91.6, "tf32": 183.0, "fp16": 362.05, "bf16": 362.05},
        source=_cite(
            _L40S,
            _L40S_URL,
            "dense figures as printed (TF32 183 | 366 sparse, FP16/BF16 362.05 | 733 sparse)",
        ),
        datasheet=_L40S,
    ),
    GpuPeak(
        model="NVIDIA A100 SXM4 (40GB/80GB)",
        match=("a100-sxm4", "a100-sxm", "a100 sxm4", "a100 sxm", "a100"),
        tflops={"fp32": 19.5, "tf32": 156.0, "fp16": 312.0, "bf16": 312.0},
        source=_cite(_A100, _A100_URL, "A100 SXM column; " + _AMPERE_DENSE),
        datasheet=_A100,
    ),
    GpuPeak(
        model="NVIDIA A100 PCIe (40GB/80GB)",
        match=("a100-pcie", "a100 pcie", "a100 80gb pcie", "a100 40gb pcie"),
        tflops={"fp32": 19.5, "tf32": 156.0, "fp16": 312.0, "bf16": 312.0},
        source=_cite(_A100, _A100_URL, "A100 PCIe column, same peaks as SXM; " + _AMPERE_DENSE),
        datasheet=_A100,
    ),
    GpuPeak(
        model="NVIDIA H100 SXM5",
        match=("h100 80gb hbm3", "h100 sxm5", "h100-sxm5", "h100 sxm", "h100-sxm"),
        tflops={"fp32": 67.0, "tf32": 494.5, "fp16": 989.5, "bf16": 989.5},
        source=_cite(
            _H100, _H100_URL, "H100 SXM column; " + _SPARSE_HALF + " (TF32 989, FP16/BF16 1979)"
        ),
        datasheet=_H100,
    ),
    GpuPeak(
        model="NVIDIA H100 PCIe",
        match=("h100 pcie", "h100-pcie"),
        tflops={"fp32": 51.0, "tf32": 378.0, "fp16": 756.5, "bf16": 756.5},
        source=_cite(
            _H100, _H100_URL, "H100 PCIe column; " + _SPARSE_HALF + " (TF32 756, FP16/BF16 1513)"
        ),
        datasheet=_H100,
    ),
    GpuPeak(
        model="NVIDIA H200 SXM",
        match=("h200", "h200 sxm", "h200-sxm"),
        # H200 NVL has lower clocks and its own column; not in this table, so not matched.
        exclude=("nvl",),
        tflops={"fp32": 67.0, "tf32": 494.5, "fp16": 989.5, "bf16": 989.5},
        source=_cite(
            _H200, _H200_URL, "H200 SXM column; " + _SPARSE_HALF + " (TF32 989, FP16/BF16 1979)"
        ),
        datasheet=_H200,
    ),
)

_UNIT = {"fp32": "fp32 (non-tensor)", "tf32": "TF32", "fp16": "fp16", "bf16": "bf16"}


def _normalize(name: str) -> str:
    return " ".join(name.lower().split())


def _fragment_found(fragment: str, name: str) -> bool:
    return re.search(rf"(?<![a-z0-9]){re.escape(fragment)}(?![a-z0-9])", name) is not None


def find_peak(gpu_name: str) -> GpuPeak | None:
    """The table entry for a reported GPU name; the longest matching fragment wins."""
    name = _normalize(gpu_name)
    best: GpuPeak | None = None
    best_len = 0
    for peak in PEAKS:
        if any(_fragment_found(x, name) for x in peak.exclude):
            continue
        for fragment in peak.match:
            if len(fragment) > best_len and _fragment_found(fragment, name):
                best, best_len = peak, len(fragment)
    return best


def peak_tflops(gpu_name: str, precision: str, tf32: bool = False) -> tuple[float | None, str]:
    """Dense peak TFLOP/s for a run's precision, and its basis (or why there is none).

    An fp32 run with ``tf32`` True is measured against the TF32 tensor-core peak, since
    frameworks then run fp32 matrix work on TF32 tensor cores; on GPUs without TF32 it
    falls back to the fp32 peak.
    """
    precision = precision.lower()
    if precision not in PEAK_PRECISIONS:
        return None, f"no peak for precision {precision!r} (known: {', '.join(PEAK_PRECISIONS)})"
    peak = find_peak(gpu_name)
    if peak is None:
        return None, f"no peak known for GPU {gpu_name!r}"
    if precision == "fp32" and tf32:
        value = peak.tflops.get("tf32")
        if value is not None:
            return value, f"TF32 dense (fp32 run with TF32 allowed), {peak.datasheet}"
        value = peak.tflops.get("fp32")
        if value is not None:
            return value, (
                f"fp32 (non-tensor; {peak.model} has no TF32 tensor cores), {peak.datasheet}"
            )
        return None, f"{peak.model} has no fp32 peak in the table"
    value = peak.tflops.get(precision)
    if value is None:
        unit = "TF32" if precision == "tf32" else precision
        return None, f"{peak.model} has no {unit} tensor cores"
    kind = _UNIT[precision] if precision == "fp32" else f"{_UNIT[precision]} dense"
    return value, f"{kind}, {peak.datasheet}"


def model_flops_utilization(
    achieved_tflops: float | None,
    gpu_name: str | None,
    precision: str,
    tf32: bool = False,
) -> Mfu:
    """MFU = achieved / dense peak, with the peak and its basis; None with a reason if unknown."""
    if not gpu_name:
        return Mfu(None, None, "no GPU name (not a GPU run?)")
    peak, basis = peak_tflops(gpu_name, precision, tf32=tf32)
    if peak is None:
        return Mfu(None, None, basis)
    if achieved_tflops is None:
        return Mfu(None, peak, f"achieved TFLOP/s unknown; {basis}")
    if not math.isfinite(achieved_tflops) or achieved_tflops < 0:
        return Mfu(None, peak, f"achieved TFLOP/s not usable ({achieved_tflops!r}); {basis}")
    return Mfu(achieved_tflops / peak, peak, basis)
