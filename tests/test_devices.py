import pytest

from bench.schema.gpu import GpuInfo
from bench.schema.spec import SpecError
from bench.telemetry.devices import (
    check_precision,
    gpu_for,
    parse_gpu_query,
    resolve_device,
    visible_gpus,
)

# Real output lines of `nvidia-smi --query-gpu=index,name,uuid,pci.bus_id,memory.total,
# driver_version,compute_cap --format=csv,noheader,nounits` (UUIDs shortened).
SMI = """0, Tesla V100-SXM2-16GB, GPU-5a8b2c1e-0d3f, 00000000:00:1B.0, 16384, 535.183.01, 7.0
1, Tesla V100-SXM2-16GB, GPU-9f1e7a44-2b6c, 00000000:00:1C.0, 16384, 535.183.01, 7.0
"""
H100 = "0, NVIDIA H100 80GB HBM3, GPU-1234, 00000000:19:00.0, 81559, 580.159.04, 9.0\n"


def test_parse_gpu_query():
    gpus = parse_gpu_query(SMI)
    assert len(gpus) == 2
    assert gpus[1] == GpuInfo(
        index=1,
        name="Tesla V100-SXM2-16GB",
        uuid="GPU-9f1e7a44-2b6c",
        pci_bus_id="00000000:00:1C.0",
        memory_total_mib=16384,
        driver_version="535.183.01",
        compute_capability=(7, 0),
    )


def test_parse_gpu_query_rejects_unexpected_rows_and_handles_na():
    with pytest.raises(ValueError):
        parse_gpu_query("0, name only\n")
    gpu = parse_gpu_query("0, X, GPU-1, 0:1:0.0, [N/A], 1.0, [N/A]\n")[0]
    assert gpu.memory_total_mib is None and gpu.compute_capability is None


def test_visible_gpus_follows_cuda_visible_devices():
    gpus = parse_gpu_query(SMI)
    assert visible_gpus(gpus, None) == gpus
    assert visible_gpus(gpus, "1") == [gpus[1]]
    assert visible_gpus(gpus, "1,0") == [gpus[1], gpus[0]]
    assert visible_gpus(gpus, "GPU-9f1e") == [gpus[1]]
    assert visible_gpus(gpus, "0,7,1") == [gpus[0]]  # CUDA stops at the first bad entry
    assert visible_gpus(gpus, "") == []


def test_resolve_device():
    gpus = parse_gpu_query(SMI)
    assert resolve_device("auto", gpus) == "cuda:0"
    assert resolve_device("auto", []) == "cpu"
    assert resolve_device("cpu", gpus) == "cpu"
    assert resolve_device("cuda", gpus) == "cuda:0"
    assert resolve_device("cuda:1", gpus) == "cuda:1"
    with pytest.raises(SpecError, match="only 2 GPU"):
        resolve_device("cuda:2", gpus)
    with pytest.raises(SpecError, match="no NVIDIA GPU"):
        resolve_device("cuda", [])
    assert gpu_for("cuda:1", gpus) == gpus[1] and gpu_for("cpu", gpus) is None


def test_precision_checks():
    v100 = parse_gpu_query(SMI)[0]
    h100 = parse_gpu_query(H100)[0]
    check_precision("fp16", "cuda:0", v100)
    check_precision("bf16", "cuda:0", h100)
    check_precision("bf16", "cpu", None)
    with pytest.raises(SpecError, match="bf16 needs compute capability 8.0"):
        check_precision("bf16", "cuda:0", v100)
    with pytest.raises(SpecError, match="fp16 is not supported on the CPU"):
        check_precision("fp16", "cpu", None)
