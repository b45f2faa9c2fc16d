import math
import re

import pytest

from bench.schema.telemetry import Mfu
from bench.telemetry.peaks import (
    PEAK_PRECISIONS,
    PEAKS,
    find_peak,
    model_flops_utilization,
    peak_tflops,
)

# Names as NVML / nvidia-smi report them -> the table's model.
REAL_NAMES = {
    "Tesla V100-SXM2-16GB": "Tesla V100 SXM2",
    "Tesla V100-SXM2-32GB": "Tesla V100 SXM2",
    "Tesla V100-PCIE-16GB": "Tesla V100 PCIe",
    "Tesla V100-PCIE-32GB": "Tesla V100 PCIe",
    "Tesla T4": "Tesla T4",
    "NVIDIA A10G": "NVIDIA A10G",
    "NVIDIA A10": "NVIDIA A10",
    "NVIDIA L4": "NVIDIA L4",
    "NVIDIA L40S": "NVIDIA L40S",
    "NVIDIA A100-SXM4-40GB": "NVIDIA A100 SXM4 (40GB/80GB)",
    "NVIDIA A100-SXM4-80GB": "NVIDIA A100 SXM4 (40GB/80GB)",
    "NVIDIA A100-PCIE-40GB": "NVIDIA A100 PCIe (40GB/80GB)",
    "NVIDIA A100 80GB PCIe": "NVIDIA A100 PCIe (40GB/80GB)",
    "NVIDIA H100 80GB HBM3": "NVIDIA H100 SXM5",
    "NVIDIA H100 PCIe": "NVIDIA H100 PCIe",
    "NVIDIA H200": "NVIDIA H200 SXM",
}


@pytest.mark.parametrize(("name", "model"), sorted(REAL_NAMES.items()))
def test_find_peak_real_names(name, model):
    peak = find_peak(name)
    assert peak is not None
    assert peak.model == model


def test_find_peak_is_case_and_space_insensitive():
    assert find_peak("  nvidia   h100 pcie ").model == "NVIDIA H100 PCIe"
    assert find_peak("TESLA T4").model == "Tesla T4"


@pytest.mark.parametrize(
    "name",
    [
        "NVIDIA GeForce RTX 4090",
        "NVIDIA L40",  # not L4, not L40S
        "NVIDIA H100 NVL",  # neither SXM nor PCIe peaks
        "NVIDIA H200 NVL",  # not the SXM entry
        "NVIDIA GH200 480GB",  # not H200
        "Tesla V100S-PCIE-32GB",  # V100S has its own, higher peaks
        "NVIDIA A100X",
        "NVIDIA T400",
        "",
    ],
)
def test_find_peak_negatives(name):
    assert find_peak(name) is None


def test_most_specific_match_wins():
    assert find_peak("NVIDIA L40S").model == "NVIDIA L40S"  # "l4" must not claim it
    assert find_peak("NVIDIA A10G").model == "NVIDIA A10G"  # nor "a10"
    assert find_peak("NVIDIA A100-SXM4-40GB").model.startswith("NVIDIA A100")
    assert find_peak("NVIDIA H100 PCIe").model == "NVIDIA H100 PCIe"


# A few headline figures of the datasheets, looked up through real NVML names (the table's
# other entries are checked through the relations below rather than copied here).
@pytest.mark.parametrize(
    ("name", "precision", "expected"),
    [
        ("Tesla V100-SXM2-16GB", "fp16", 125.0),
        ("Tesla T4", "fp16", 65.0),
        ("NVIDIA A100-SXM4-80GB", "tf32", 156.0),
        ("NVIDIA H100 80GB HBM3", "bf16", 989.5),
    ],
)
def test_headline_datasheet_figures(name, precision, expected):
    assert peak_tflops(name, precision)[0] == expected


_SPARSE = re.compile(r"\(TF32 ([\d.]+), FP16/BF16 ([\d.]+)(?: sparse)?\)")


def test_sparse_derived_entries_are_half_the_quoted_sparse_figures():
    derived = [p for p in PEAKS if "sparsity' figure / 2" in p.source]
    assert {p.model for p in derived} >= {"NVIDIA L4", "NVIDIA H100 SXM5", "NVIDIA H200 SXM"}
    for peak in derived:
        m = _SPARSE.search(peak.source)
        assert m is not None, peak.model
        tf32_sparse, half_sparse = float(m.group(1)), float(m.group(2))
        assert peak.tflops["tf32"] == tf32_sparse / 2, peak.model
        assert peak.tflops["fp16"] == peak.tflops["bf16"] == half_sparse / 2, peak.model


def test_architecture_relations_hold_for_every_entry():
    for peak in PEAKS:
        fp32, tf32, fp16, bf16 = (peak.tflops[p] for p in PEAK_PRECISIONS)
        if tf32 is None:  # Volta, Turing: no TF32, no bf16 tensor cores
            assert bf16 is None, peak.model
            assert fp16 is not None and fp16 > 7.5 * fp32, peak.model  # tensor cores: ~8x
            continue
        # Ampere and newer: bf16 runs at the fp16 rate, twice TF32's, above plain fp32
        assert bf16 == fp16, peak.model
        assert fp16 == pytest.approx(2 * tf32, rel=0.03), peak.model
        assert fp32 is not None and tf32 > fp32, peak.model


def test_every_entry_has_all_precisions_and_a_source():
    for peak in PEAKS:
        assert set(peak.tflops) == set(PEAK_PRECISIONS), peak.model
        assert peak.tflops["fp32"] is not None and peak.tflops["fp16"] is not None
        assert "datasheet" in peak.source and "https://www.nvidia.com/" in peak.source
        assert peak.datasheet
        assert all(m == m.lower() for m in peak.match + peak.exclude)


def test_sparse_derived_entries_say_so():
    for name in ("NVIDIA L4", "NVIDIA H100 80GB HBM3", "NVIDIA H100 PCIe", "NVIDIA H200"):
        assert "sparsity' figure / 2" in find_peak(name).source
    assert "no public NVIDIA datasheet" in find_peak("NVIDIA A10G").source


def test_basis_strings():
    assert peak_tflops("NVIDIA H100 80GB HBM3", "bf16") == (
        989.5,
        "bf16 dense, NVIDIA H100 Tensor Core GPU datasheet",
    )
    assert peak_tflops("NVIDIA A100-SXM4-40GB", "fp32") == (
        19.5,
        "fp32 (non-tensor), NVIDIA A100 Tensor Core GPU datasheet",
    )
    assert peak_tflops("NVIDIA L4", "tf32") == (
        60.0,
        "TF32 dense, NVIDIA L4 Tensor Core GPU datasheet",
    )


def test_fp32_with_tf32_uses_the_tf32_peak():
    assert peak_tflops("NVIDIA H100 80GB HBM3", "fp32", tf32=True) == (
        494.5,
        "TF32 dense (fp32 run with TF32 allowed), NVIDIA H100 Tensor Core GPU datasheet",
    )
    assert peak_tflops("NVIDIA A100-SXM4-40GB", "fp32", tf32=True)[0] == 156.0
    # tf32 only changes fp32 runs.
    assert peak_tflops("NVIDIA A100-SXM4-40GB", "bf16", tf32=True)[0] == 312.0


def test_fp32_with_tf32_falls_back_where_there_is_no_tf32():
    value, basis = peak_tflops("Tesla V100-SXM2-16GB", "fp32", tf32=True)
    assert value == 15.7
    assert basis == (
        "fp32 (non-tensor; Tesla V100 SXM2 has no TF32 tensor cores), "
        "NVIDIA Tesla V100 GPU Accelerator datasheet"
    )


def test_absent_units_give_reasons():
    assert peak_tflops("Tesla T4", "bf16") == (None, "Tesla T4 has no bf16 tensor cores")
    assert peak_tflops("Tesla V100-PCIE-16GB", "bf16") == (
        None,
        "Tesla V100 PCIe has no bf16 tensor cores",
    )
    assert peak_tflops("Tesla T4", "tf32") == (None, "Tesla T4 has no TF32 tensor cores")


def test_unknown_gpu_and_precision():
    assert peak_tflops("NVIDIA GeForce RTX 4090", "bf16") == (
        None,
        "no peak known for GPU 'NVIDIA GeForce RTX 4090'",
    )
    value, basis = peak_tflops("NVIDIA H100 80GB HBM3", "fp8")
    assert value is None and "fp8" in basis
    assert peak_tflops("NVIDIA H100 80GB HBM3", "BF16")[0] == 989.5


def test_mfu_arithmetic():
    assert model_flops_utilization(494.75, "NVIDIA H100 80GB HBM3", "bf16") == Mfu(
        0.5, 989.5, "bf16 dense, NVIDIA H100 Tensor Core GPU datasheet"
    )
    assert model_flops_utilization(78.0, "NVIDIA A100-SXM4-80GB", "fp16").mfu == 0.25
    result = model_flops_utilization(49.45, "NVIDIA H100 80GB HBM3", "fp32", tf32=True)
    assert result.peak_tflops == 494.5
    assert math.isclose(result.mfu, 0.1)
    assert result.basis.startswith("TF32 dense (fp32 run with TF32 allowed)")
    assert model_flops_utilization(6.7, "NVIDIA H100 80GB HBM3", "fp32").mfu == pytest.approx(0.1)
    assert model_flops_utilization(0.0, "Tesla T4", "fp16").mfu == 0.0


def test_mfu_unknowns_give_none_with_reason():
    assert model_flops_utilization(10.0, None, "bf16") == Mfu(
        None, None, "no GPU name (not a GPU run?)"
    )
    assert model_flops_utilization(10.0, "NVIDIA GeForce RTX 4090", "bf16") == Mfu(
        None, None, "no peak known for GPU 'NVIDIA GeForce RTX 4090'"
    )
    assert model_flops_utilization(10.0, "Tesla T4", "bf16") == Mfu(
        None, None, "Tesla T4 has no bf16 tensor cores"
    )
    unknown = model_flops_utilization(None, "NVIDIA L4", "bf16")
    assert unknown.mfu is None and unknown.peak_tflops == 121.0
    assert unknown.basis.startswith("achieved TFLOP/s unknown; ")
    for bad in (float("nan"), float("inf"), -1.0):
        result = model_flops_utilization(bad, "NVIDIA L4", "bf16")
        assert result.mfu is None and "not usable" in result.basis
